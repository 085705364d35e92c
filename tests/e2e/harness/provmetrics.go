package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// grpcTotals is the provider's own account of the gRPC calls it served (its Prometheus
// histogram autoscaler_cloudify_grpc_request_duration_seconds): server-side seconds and calls.
type grpcTotals struct {
	seconds float64
	calls   int
}

// scrapeGRPC reads GET {url} (the provider's /metrics) and sums the gRPC duration histogram over
// all methods.
func scrapeGRPC(ctx context.Context, url string) (grpcTotals, error) {
	var t grpcTotals
	if url == "" {
		return t, nil
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, url, nil)
	if err != nil {
		return t, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return t, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return t, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		for suffix, add := range map[string]func(float64){
			"_sum{":   func(v float64) { t.seconds += v },
			"_count{": func(v float64) { t.calls += int(v) },
		} {
			if !strings.HasPrefix(line, "autoscaler_cloudify_grpc_request_duration_seconds"+suffix) {
				continue
			}
			if i := strings.LastIndexByte(line, ' '); i > 0 {
				if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
					add(v)
				}
			}
		}
	}
	return t, sc.Err()
}
