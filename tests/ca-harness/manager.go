package harness

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// Manager is a real Cloudify Manager reached through the environment the manager tier exports
// (tests/manager/manager.sh env): CLOUDIFY_MANAGER_URL, CLOUDIFY_MANAGER_USER/_PASSWORD or
// CLOUDIFY_MANAGER_TOKEN, CLOUDIFY_MANAGER_TENANT, CLOUDIFY_MANAGER_CA_CERT (https). The suite
// reads Cloudify's side through it (the invariants are checked there) and plays the operator.
type Manager struct {
	URL      string
	Tenant   string
	User     string
	Password string
	Token    string
	CACert   string
	http     *http.Client
}

// ManagerFromEnv returns the manager the environment names. Without CLOUDIFY_MANAGER_URL the
// test is skipped with a message saying how to run it, unless `required` names an environment
// variable set to 1 (the manager tier promised a manager): then it fails.
func ManagerFromEnv(t testing.TB, required string) *Manager {
	t.Helper()
	u := os.Getenv("CLOUDIFY_MANAGER_URL")
	if u == "" {
		how := "CLOUDIFY_MANAGER_URL is not set: the real-manager mode runs in the manager tier (tests/manager/run.sh)"
		if os.Getenv(required) == "1" {
			t.Fatalf("%s=1 asked for the real manager, but %s", required, how)
		}
		t.Skip(how)
	}
	m := &Manager{URL: strings.TrimRight(u, "/"), Tenant: os.Getenv("CLOUDIFY_MANAGER_TENANT"),
		User: os.Getenv("CLOUDIFY_MANAGER_USER"), Password: os.Getenv("CLOUDIFY_MANAGER_PASSWORD"),
		Token: os.Getenv("CLOUDIFY_MANAGER_TOKEN"), CACert: os.Getenv("CLOUDIFY_MANAGER_CA_CERT")}
	if m.Tenant == "" {
		m.Tenant = "default_tenant"
	}
	tr := &http.Transport{}
	if strings.HasPrefix(m.URL, "https") && m.CACert != "" {
		pem, err := os.ReadFile(m.CACert)
		if err != nil {
			t.Fatalf("CLOUDIFY_MANAGER_CA_CERT: %v", err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	m.http = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	return m
}

// Do makes one REST call (path below /api/v3.1) and decodes the JSON answer into out (when not
// nil). An answer that is not 2xx is an error carrying the status and the body.
func (m *Manager) Do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, m.URL+"/api/v3.1"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Tenant", m.Tenant)
	if m.Token != "" {
		req.Header.Set("Authentication-Token", m.Token)
	} else {
		req.SetBasicAuth(m.User, m.Password)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %.300s", method, path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (m *Manager) must(t testing.TB, method, path string, body, out any) {
	t.Helper()
	if err := m.Do(method, path, body, out); err != nil {
		t.Fatalf("Cloudify: %v", err)
	}
}

// Instance is a node instance as the real manager reports it.
type Instance struct {
	ID                string         `json:"id"`
	NodeID            string         `json:"node_id"`
	HostID            string         `json:"host_id"`
	DeploymentID      string         `json:"deployment_id"`
	State             string         `json:"state"`
	RuntimeProperties map[string]any `json:"runtime_properties"`
	ScalingGroups     []struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	} `json:"scaling_groups"`
}

// Hostname is the VM's `hostname` runtime property (the Kubernetes node name).
func (i Instance) Hostname() string {
	h, _ := i.RuntimeProperties["hostname"].(string)
	return h
}

// Instances lists every node instance of a deployment (all pages, sorted by id).
func (m *Manager) Instances(t testing.TB, deployment string) []Instance {
	t.Helper()
	out, err := m.TryInstances(deployment)
	if err != nil {
		t.Fatalf("Cloudify: %v", err)
	}
	return out
}

// TryInstances is Instances returning the error (for goroutines other than the test's).
func (m *Manager) TryInstances(deployment string) ([]Instance, error) {
	var out []Instance
	for offset := 0; ; {
		var page struct {
			Items    []Instance `json:"items"`
			Metadata struct {
				Pagination struct {
					Total int `json:"total"`
				} `json:"pagination"`
			} `json:"metadata"`
		}
		q := url.Values{"deployment_id": {deployment}, "_sort": {"id"}, "_size": {"1000"}, "_offset": {fmt.Sprint(offset)}}
		if err := m.Do(http.MethodGet, "/node-instances?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
		offset += len(page.Items)
		if len(page.Items) == 0 || offset >= page.Metadata.Pagination.Total {
			return out, nil
		}
	}
}

// GroupVMs returns the VM instances (their own host) of a scaling group, by id.
func (m *Manager) GroupVMs(t testing.TB, deployment, group string) map[string]Instance {
	t.Helper()
	return groupVMs(m.Instances(t, deployment), group)
}

// TryGroupVMs is GroupVMs returning the error.
func (m *Manager) TryGroupVMs(deployment, group string) (map[string]Instance, error) {
	all, err := m.TryInstances(deployment)
	return groupVMs(all, group), err
}

func groupVMs(all []Instance, group string) map[string]Instance {
	out := map[string]Instance{}
	for _, i := range all {
		if i.HostID == i.ID && len(i.ScalingGroups) > 0 && i.ScalingGroups[0].Name == group {
			out[i.ID] = i
		}
	}
	return out
}

// GroupProps are a scaling group's properties.
type GroupProps struct {
	Min     int `json:"min_instances"`
	Max     int `json:"max_instances"`
	Current int `json:"current_instances"`
	Planned int `json:"planned_instances"`
}

// Group reads a scaling group's properties.
func (m *Manager) Group(t testing.TB, deployment, group string) GroupProps {
	t.Helper()
	p, err := m.TryGroup(deployment, group)
	if err != nil {
		t.Fatalf("Cloudify: %v", err)
	}
	return p
}

// TryGroup is Group returning the error.
func (m *Manager) TryGroup(deployment, group string) (GroupProps, error) {
	var d struct {
		ScalingGroups map[string]struct {
			Properties GroupProps `json:"properties"`
		} `json:"scaling_groups"`
	}
	if err := m.Do(http.MethodGet, "/deployments/"+url.PathEscape(deployment)+"?_include=id,scaling_groups", nil, &d); err != nil {
		return GroupProps{}, err
	}
	g, ok := d.ScalingGroups[group]
	if !ok {
		return GroupProps{}, fmt.Errorf("deployment %s has no scaling group %s", deployment, group)
	}
	return g.Properties, nil
}

// Execution is a workflow execution as the real manager reports it.
type Execution struct {
	ID         string         `json:"id"`
	WorkflowID string         `json:"workflow_id"`
	Status     string         `json:"status"`
	Error      string         `json:"error"`
	CreatedAt  string         `json:"created_at"`
	Parameters map[string]any `json:"parameters"`
}

// Delta is the execution's `delta` parameter.
func (e Execution) Delta() int {
	switch d := e.Parameters["delta"].(type) {
	case float64:
		return int(d)
	case string:
		var n int
		fmt.Sscan(d, &n)
		return n
	}
	return 0
}

// Include is the execution's `include_instances`.
func (e Execution) Include() []string {
	var out []string
	switch v := e.Parameters["include_instances"].(type) {
	case string:
		out = append(out, v)
	case []any:
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// Ended reports an end state.
func (e Execution) Ended() bool {
	return e.Status == "terminated" || e.Status == "failed" || e.Status == "cancelled"
}

// ScaleExecutions lists the `scale` executions of a deployment, oldest first.
func (m *Manager) ScaleExecutions(t testing.TB, deployment string) []Execution {
	t.Helper()
	var page struct {
		Items []Execution `json:"items"`
	}
	q := url.Values{"deployment_id": {deployment}, "workflow_id": {"scale"}, "_sort": {"created_at"}, "_size": {"1000"}}
	m.must(t, http.MethodGet, "/executions?"+q.Encode(), nil, &page)
	return page.Items
}

// Execution reads one execution.
func (m *Manager) Execution(t testing.TB, id string) Execution {
	t.Helper()
	var e Execution
	m.must(t, http.MethodGet, "/executions/"+url.PathEscape(id), nil, &e)
	return e
}

// WaitExecution polls an execution until it ended.
func (m *Manager) WaitExecution(t testing.TB, id string, timeout time.Duration) Execution {
	t.Helper()
	var e Execution
	Eventually(t, timeout, "execution "+id+" to end", func() (bool, string) {
		e = m.Execution(t, id)
		return e.Ended(), e.Status
	})
	return e
}

// StartScale starts the scale workflow as an operator would (parameters the provider never sends).
func (m *Manager) StartScale(t testing.TB, deployment string, params map[string]any) Execution {
	t.Helper()
	var e Execution
	m.must(t, http.MethodPost, "/executions", map[string]any{"deployment_id": deployment, "workflow_id": "scale",
		"parameters": params, "queue": true}, &e)
	return e
}

// Modification is a deployment modification.
type Modification struct {
	ID      string         `json:"id"`
	Status  string         `json:"status"`
	Context map[string]any `json:"context"`
}

// Modifications lists a deployment's modifications in a status.
func (m *Manager) Modifications(t testing.TB, deployment, status string) []Modification {
	t.Helper()
	var page struct {
		Items []Modification `json:"items"`
	}
	q := url.Values{"deployment_id": {deployment}, "status": {status}, "_size": {"1000"}}
	m.must(t, http.MethodGet, "/deployment-modifications?"+q.Encode(), nil, &page)
	return page.Items
}

// SetFault sets (a non-empty map) or clears (nil) the runtime-property fault switch of a
// worker-pool-faults deployment (tests/manager/README.md, "Fault switches").
func (m *Manager) SetFault(t testing.TB, deployment string, fault map[string]any) {
	t.Helper()
	var page struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	m.must(t, http.MethodGet, "/node-instances?deployment_id="+url.QueryEscape(deployment)+"&node_id=fault_switch", nil, &page)
	if len(page.Items) == 0 {
		t.Fatalf("%s has no fault_switch node (use the worker-pool-faults blueprint)", deployment)
	}
	var inst struct {
		RuntimeProperties map[string]any `json:"runtime_properties"`
		Version           int            `json:"version"`
	}
	m.must(t, http.MethodGet, "/node-instances/"+page.Items[0].ID, nil, &inst)
	if inst.RuntimeProperties == nil {
		inst.RuntimeProperties = map[string]any{}
	}
	if fault == nil {
		fault = map[string]any{}
	}
	inst.RuntimeProperties["fault"] = fault
	m.must(t, http.MethodPatch, "/node-instances/"+page.Items[0].ID,
		map[string]any{"runtime_properties": inst.RuntimeProperties, "version": inst.Version}, nil)
}

// RESTFront is a second REST service (gunicorn) of the local manager stack on its own port
// (tests/manager/rest_front.sh), which a test may stop and start under the provider without
// disturbing the workflow engine or other users of the manager.
type RESTFront struct {
	URL    string
	script string
	port   int
}

// StartRESTFront starts the REST front named by MANAGER_REST_FRONT (the script's path; the
// manager tier sets it for a local stack). Returns nil when it is not set: the caller skips what
// needs it. Stopped when the test ends.
func StartRESTFront(t testing.TB) *RESTFront {
	t.Helper()
	script := os.Getenv("MANAGER_REST_FRONT")
	if script == "" {
		return nil
	}
	f := &RESTFront{script: script, port: FreePort(t)}
	f.URL = fmt.Sprintf("http://127.0.0.1:%d", f.port)
	f.run(t, "start")
	t.Cleanup(func() { _ = exec.Command("bash", f.script, "stop", fmt.Sprint(f.port)).Run() })
	return f
}

func (f *RESTFront) run(t testing.TB, action string) {
	t.Helper()
	out, err := exec.Command("bash", f.script, action, fmt.Sprint(f.port)).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s %d: %v\n%s", f.script, action, f.port, err, out)
	}
	t.Logf("REST front %s: %s", action, strings.TrimSpace(string(out)))
}

// Stop ends the REST front's gunicorn (its port refuses connections until Start).
func (f *RESTFront) Stop(t testing.TB) { f.run(t, "stop") }

// Start starts it again and waits until it answers.
func (f *RESTFront) Start(t testing.TB) { f.run(t, "start") }

// SortedKeys returns a map's keys, sorted (for messages and comparisons).
func SortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
