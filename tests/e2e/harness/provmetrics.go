package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// grpcTotals is the provider's own account of the gRPC calls it served (its Prometheus
// histogram autoscaler_cloudify_grpc_request_duration_seconds): server-side seconds and calls.
type grpcTotals struct {
	seconds  float64
	calls    int
	byMethod map[string]float64 // server-side seconds per RPC method
}

// minus returns t - o, per method too.
func (t grpcTotals) minus(o grpcTotals) grpcTotals {
	d := grpcTotals{seconds: t.seconds - o.seconds, calls: t.calls - o.calls, byMethod: map[string]float64{}}
	for m, v := range t.byMethod {
		d.byMethod[m] = v - o.byMethod[m]
	}
	return d
}

// top names the method with the most server-side time.
func (t grpcTotals) top() string {
	best, bestV := "", 0.0
	for m, v := range t.byMethod {
		if v > bestV {
			best, bestV = m, v
		}
	}
	if best == "" {
		return "-"
	}
	return fmt.Sprintf("%s %.3f s", best, bestV)
}

// scrapeGRPC reads GET {url} (the provider's /metrics) and sums the gRPC duration histogram over
// all methods.
func scrapeGRPC(ctx context.Context, url string) (grpcTotals, error) {
	t := grpcTotals{byMethod: map[string]float64{}}
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
			"_sum{": func(v float64) {
				t.seconds += v
				if i := strings.Index(line, `method="`); i >= 0 {
					m := line[i+len(`method="`):]
					if j := strings.IndexByte(m, '"'); j >= 0 {
						t.byMethod[m[:j]] += v
					}
				}
			},
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

// providerSeesCloudifyDown reports whether the provider's /readyz (next to its /metrics) says its
// last refresh could not reach Cloudify.
func providerSeesCloudifyDown(ctx context.Context, metricsURL string) (bool, error) {
	if metricsURL == "" {
		return false, fmt.Errorf("no provider metrics URL (--provider-metrics)")
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, strings.TrimSuffix(metricsURL, "/metrics")+"/readyz", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var body struct {
		Detail struct {
			Reachable *bool `json:"cloudify_reachable"`
		} `json:"detail"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return false, err
	}
	return body.Detail.Reachable != nil && !*body.Detail.Reachable, nil
}
