package harness

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// RPCCounts scrapes the provider's Prometheus endpoint (GET {http}/metrics) and returns the number
// of gRPC requests it served per method (all status codes). Server-side counts are how the tests
// see which RPCs CA's own client made, since CA's client keeps no counters of its own.
func (s *Stack) RPCCounts(t testing.TB) map[string]int {
	t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: HTTP %d %s", resp.StatusCode, b)
	}
	return ParseRPCCounts(resp.Body)
}

// ParseRPCCounts reads `autoscaler_cloudify_grpc_requests_total{method="M",code="C"} N` lines.
func ParseRPCCounts(r io.Reader) map[string]int {
	out := map[string]int{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "autoscaler_cloudify_grpc_requests_total{") {
			continue
		}
		labels, value, ok := strings.Cut(line[len("autoscaler_cloudify_grpc_requests_total{"):], "} ")
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(labels, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok && k == "method" {
				out[strings.Trim(v, `"`)] += int(n)
			}
		}
	}
	return out
}

// RefreshesOK returns the provider's completed snapshot rebuilds
// (`autoscaler_cloudify_refreshes_total{result="ok"}`): a test that changed Cloudify waits for two
// more to know the provider's snapshot was read after the change.
func (s *Stack) RefreshesOK(t testing.TB) int {
	t.Helper()
	resp, err := http.Get("http://" + s.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `autoscaler_cloudify_refreshes_total{result="ok"} `); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(n)
			}
		}
	}
	return 0
}
