package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// cloudifyClient talks to the simulator's real REST API, or to a real Cloudify Manager
// (--manager, issue 19), the way an operator or a kubelet bootstrap script on a Cloudify VM
// would see it: basic or token auth plus the Tenant header.
type cloudifyClient struct {
	base     string // manager URL, e.g. http://127.0.0.1:8100
	tenant   string
	user     string
	password string
	token    string // Authentication-Token instead of basic auth, when set
	http     *http.Client
	// manager: a real Cloudify Manager, shared with others: the lists below are restricted
	// to `deployments` (the configured groups'), and faults go through the tier blueprints'
	// fault switch instead of the simulator's /_sim/faults.
	manager     bool
	deployments []string
}

type nodeInstance struct {
	ID                string         `json:"id"`
	NodeID            string         `json:"node_id"`
	DeploymentID      string         `json:"deployment_id"`
	HostID            string         `json:"host_id"`
	State             string         `json:"state"`
	RuntimeProperties map[string]any `json:"runtime_properties"`
	ScalingGroups     []struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	} `json:"scaling_groups"`
}

type execution struct {
	ID           string         `json:"id"`
	WorkflowID   string         `json:"workflow_id"`
	DeploymentID string         `json:"deployment_id"`
	Status       string         `json:"status"`
	Error        string         `json:"error"`
	Parameters   map[string]any `json:"parameters"`
	CreatedAt    string         `json:"created_at"`
}

type listMeta struct {
	Pagination struct {
		Total  int `json:"total"`
		Size   int `json:"size"`
		Offset int `json:"offset"`
	} `json:"pagination"`
}

func (c *cloudifyClient) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authentication-Token", c.token)
	} else {
		req.SetBasicAuth(c.user, c.password)
	}
	req.Header.Set("Tenant", c.tenant)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return httpStatusError{fmt.Sprintf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, truncate(string(data), 300)), resp.StatusCode}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w (body %s)", method, path, err, truncate(string(data), 300))
		}
	}
	return nil
}

// nodeInstances lists every node instance of the tenant, following pagination.
func (c *cloudifyClient) nodeInstances(ctx context.Context) ([]nodeInstance, error) {
	var all []nodeInstance
	for offset := 0; ; {
		var page struct {
			Items    []nodeInstance `json:"items"`
			Metadata listMeta       `json:"metadata"`
		}
		q := c.listQuery(offset)
		if err := c.do(ctx, http.MethodGet, "/api/v3.1/node-instances?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		offset += len(page.Items)
		if len(page.Items) == 0 || offset >= page.Metadata.Pagination.Total {
			return all, nil
		}
	}
}

func (c *cloudifyClient) executions(ctx context.Context) ([]execution, error) {
	var all []execution
	for offset := 0; ; {
		var page struct {
			Items    []execution `json:"items"`
			Metadata listMeta    `json:"metadata"`
		}
		q := c.listQuery(offset)
		q.Set("_sort", "created_at")
		if err := c.do(ctx, http.MethodGet, "/api/v3.1/executions?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		offset += len(page.Items)
		if len(page.Items) == 0 || offset >= page.Metadata.Pagination.Total {
			return all, nil
		}
	}
}

// httpStatusError is a non-2xx answer; code lets a caller tell "gone" (404) from a failure.
type httpStatusError struct {
	msg  string
	code int
}

func (e httpStatusError) Error() string { return e.msg }

// deploymentGone is true once Cloudify answers 404 for the deployment (issue 22: a deleted
// CloudifyNodePool's deployment must be gone, not merely uninstalled).
func (c *cloudifyClient) deploymentGone(ctx context.Context, deployment string) (bool, error) {
	err := c.do(ctx, http.MethodGet, "/api/v3.1/deployments/"+url.PathEscape(deployment)+"?_include=id", nil, nil)
	var he httpStatusError
	if errors.As(err, &he) && he.code == http.StatusNotFound {
		return true, nil
	}
	return false, err
}

// listQuery is one page of a list; on a real manager only the configured groups' deployments.
func (c *cloudifyClient) listQuery(offset int) url.Values {
	q := url.Values{"_size": {"1000"}, "_offset": {fmt.Sprint(offset)}}
	if c.manager {
		q["deployment_id"] = c.deployments
	}
	return q
}

// groupSize reads scaling_groups.<g>.properties.current_instances of a deployment.
func (c *cloudifyClient) groupSize(ctx context.Context, deployment, group string) (current, planned int, err error) {
	var dep struct {
		ScalingGroups map[string]struct {
			Properties struct {
				Current int `json:"current_instances"`
				Planned int `json:"planned_instances"`
			} `json:"properties"`
		} `json:"scaling_groups"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v3.1/deployments/"+url.PathEscape(deployment), nil, &dep); err != nil {
		return 0, 0, err
	}
	g, ok := dep.ScalingGroups[group]
	if !ok {
		return 0, 0, fmt.Errorf("deployment %s has no scaling group %s", deployment, group)
	}
	return g.Properties.Current, g.Properties.Planned, nil
}

// scale starts the scale workflow directly (used only in the no-CA mode, where the harness plays the
// operator instead of the autoscaler).
func (c *cloudifyClient) scale(ctx context.Context, deployment, group string, delta int, include []string) (execution, error) {
	params := map[string]any{"scalable_entity_name": group, "delta": delta, "scale_compute": false}
	if len(include) > 0 {
		params["include_instances"] = include
	}
	var ex execution
	err := c.do(ctx, http.MethodPost, "/api/v3.1/executions", map[string]any{
		"deployment_id": deployment, "workflow_id": "scale", "parameters": params, "queue": true,
	}, &ex)
	return ex, err
}

func (c *cloudifyClient) faults(ctx context.Context, f map[string]any) error {
	if !c.manager {
		return c.do(ctx, http.MethodPost, "/_sim/faults", f, nil)
	}
	// The real manager has no fault API: the tier blueprints' fault switch fails the next VM
	// create of every deployment once (tests/manager/README.md, "Fault switches"). Only the
	// failure of the next scale-out has an equivalent.
	for k := range f {
		if k != "fail_next_executions" && k != "fail_reason" {
			return fmt.Errorf("fault %q has no equivalent on a real manager", k)
		}
	}
	once := fmt.Sprintf("e2e-%d", time.Now().UnixNano())
	for _, d := range c.deployments {
		if err := c.setFaultSwitch(ctx, d, map[string]any{"fail": "quota", "once": once, "nodes": []string{"worker_host"}}); err != nil {
			return err
		}
	}
	return nil
}

func (c *cloudifyClient) clearFaults(ctx context.Context) error {
	if !c.manager {
		return c.do(ctx, http.MethodDelete, "/_sim/faults", nil, nil)
	}
	for _, d := range c.deployments {
		if err := c.setFaultSwitch(ctx, d, map[string]any{}); err != nil {
			return err
		}
	}
	return nil
}

// setFaultSwitch sets the `fault` runtime property of a worker-pool-faults deployment's
// `fault_switch` instance.
func (c *cloudifyClient) setFaultSwitch(ctx context.Context, deployment string, fault map[string]any) error {
	var page struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	q := url.Values{"deployment_id": {deployment}, "node_id": {"fault_switch"}}
	if err := c.do(ctx, http.MethodGet, "/api/v3.1/node-instances?"+q.Encode(), nil, &page); err != nil {
		return err
	}
	if len(page.Items) == 0 {
		return fmt.Errorf("deployment %s has no fault_switch (use the tier's worker-pool-faults blueprint)", deployment)
	}
	var inst struct {
		RuntimeProperties map[string]any `json:"runtime_properties"`
		Version           int            `json:"version"`
	}
	path := "/api/v3.1/node-instances/" + url.PathEscape(page.Items[0].ID)
	if err := c.do(ctx, http.MethodGet, path, nil, &inst); err != nil {
		return err
	}
	if inst.RuntimeProperties == nil {
		inst.RuntimeProperties = map[string]any{}
	}
	inst.RuntimeProperties["fault"] = fault
	return c.do(ctx, http.MethodPatch, path, map[string]any{"runtime_properties": inst.RuntimeProperties, "version": inst.Version}, nil)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func isVM(ni nodeInstance) bool {
	return ni.HostID == ni.ID && len(ni.ScalingGroups) > 0
}

func hostname(ni nodeInstance) string {
	if h, ok := ni.RuntimeProperties["hostname"].(string); ok {
		return h
	}
	return ""
}

func executionDelta(ex execution) int {
	switch d := ex.Parameters["delta"].(type) {
	case float64:
		return int(d)
	case string:
		var n int
		fmt.Sscan(d, &n)
		return n
	}
	return 0
}

func executionInclude(ex execution) []string {
	var out []string
	if l, ok := ex.Parameters["include_instances"].([]any); ok {
		for _, v := range l {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func isEndState(s string) bool { return s == "terminated" || s == "failed" || s == "cancelled" }
