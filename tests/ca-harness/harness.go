// Package harness starts the autoscaler-cloudify binary twice (`simulator` and `serve`) on free
// loopback ports, waits until both answer, and stops them (and dumps their logs on failure) when
// the test ends. Used by tests/ca-conformance-suite, the scenario that tests/ca-conformance (CA 1.36.1)
// and tests/ca-conformance-134 (CA 1.34.1) run, one Go module per CA version; this module uses the
// standard library only.
package harness

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary returns $AUTOSCALER_CLOUDIFY_BIN or <repo>/target/release/autoscaler-cloudify.
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("AUTOSCALER_CLOUDIFY_BIN")
	if bin == "" {
		_, file, _, _ := runtime.Caller(0)
		// file = <repo>/tests/ca-harness/harness.go
		repo := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		bin = filepath.Join(repo, "target", "release", "autoscaler-cloudify")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("autoscaler-cloudify binary not found at %s (build it with `cargo build --release` or set AUTOSCALER_CLOUDIFY_BIN): %v", bin, err)
	}
	return bin
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Proc is one running child process.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuf
	done chan struct{}
	err  error
}

// Logs returns everything the process printed so far.
func (p *Proc) Logs() string { return p.out.String() }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start runs bin with args; on test cleanup it is stopped (SIGTERM, then SIGKILL after 5 s), and
// its output is dumped if the test failed (or CA_CONFORMANCE_LOGS=1).
func Start(t testing.TB, name, bin string, env []string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out := &syncBuf{}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Env = append(os.Environ(), env...)
	// Die with the test binary even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Logf("started %s (pid %d): %s %s", name, cmd.Process.Pid, bin, strings.Join(args, " "))
	t.Cleanup(func() {
		if !p.Exited() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() || os.Getenv("CA_CONFORMANCE_LOGS") == "1" {
			t.Logf("----- %s output (exit: %v) -----\n%s\n----- end of %s output -----", name, p.err, p.Logs(), name)
		}
	})
	return p
}

// WaitHTTP polls url until it answers 200 or the process dies or timeout passes.
func WaitHTTP(t testing.TB, p *Proc, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	var last string
	for time.Now().Before(deadline) {
		if p.Exited() {
			t.Fatalf("%s exited before %s was ready: %v\n%s", p.Name, url, p.err, p.Logs())
		}
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("HTTP %d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready at %s after %s (last: %s)\n%s", p.Name, url, timeout, last, p.Logs())
}

// Stack is a running `serve` process and, unless it runs against a real manager, the simulator
// it is pointed at.
type Stack struct {
	Bin       string
	SimURL    string
	GRPCAddr  string // 127.0.0.1:PORT
	GRPCPort  int
	HTTPAddr  string
	Sim       *Proc // nil when serve runs against a real manager (StartServe)
	Serve     *Proc
	ConfigDir string
	// ConfigPath is the provider config serve runs with (`check --config` reads it too).
	ConfigPath string
}

// StartSimulator starts `autoscaler-cloudify simulator --listen 127.0.0.1:P --scenario FILE`.
func StartSimulator(t testing.TB, bin, scenario string) (*Proc, string) {
	t.Helper()
	port := FreePort(t)
	args := []string{"simulator", "--listen", fmt.Sprintf("127.0.0.1:%d", port)}
	if scenario != "" {
		args = append(args, "--scenario", scenario)
	}
	p := Start(t, "simulator", bin, nil, args...)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	WaitHTTP(t, p, url+"/_sim/requests", 30*time.Second)
	return p, url
}

// ServeOptions are the extra inputs of StartServe.
type ServeOptions struct {
	ConfigTemplate string   // provider config file; ${SIMULATOR_URL} is replaced
	ExtraArgs      []string // e.g. --tls-cert ...
}

// StartStack starts the simulator and `serve` against it and waits for /readyz.
func StartStack(t testing.TB, scenario string, opts ServeOptions) *Stack {
	t.Helper()
	bin := Binary(t)
	sim, simURL := StartSimulator(t, bin, scenario)
	s := StartServe(t, opts.ConfigTemplate, map[string]string{"SIMULATOR_URL": simURL}, opts.ExtraArgs, []string{"CLOUDIFY_PASSWORD=admin"})
	s.SimURL, s.Sim = simURL, sim
	return s
}

// StartServe starts `serve` alone (against a manager the caller names, e.g. a real one) from a
// config template whose ${KEY} placeholders are replaced by vars, with the secrets in env, and
// waits for /readyz.
func StartServe(t testing.TB, template string, vars map[string]string, extraArgs, env []string) *Stack {
	t.Helper()
	s := &Stack{Bin: Binary(t), ConfigDir: t.TempDir()}
	raw, err := os.ReadFile(template)
	if err != nil {
		t.Fatalf("read provider config: %v", err)
	}
	cfg := string(raw)
	for k, v := range vars {
		cfg = strings.ReplaceAll(cfg, "${"+k+"}", v)
	}
	s.ConfigPath = filepath.Join(s.ConfigDir, "provider.yaml")
	if err := os.WriteFile(s.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.GRPCPort = FreePort(t)
	s.GRPCAddr = fmt.Sprintf("127.0.0.1:%d", s.GRPCPort)
	s.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	args := []string{"serve", "--config", s.ConfigPath, "--listen", s.GRPCAddr, "--http-listen", s.HTTPAddr}
	args = append(args, extraArgs...)
	s.Serve = Start(t, "serve", s.Bin, env, args...)
	WaitHTTP(t, s.Serve, "http://"+s.HTTPAddr+"/readyz", 60*time.Second)
	return s
}

// CloudConfig writes a CA cloud-config file and returns its path.
func (s *Stack) CloudConfig(t testing.TB, body string) string {
	t.Helper()
	f, err := os.CreateTemp(s.ConfigDir, "cloud-config-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(body); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// SimFaults POSTs a fault document to {sim}/_sim/faults.
func (s *Stack) SimFaults(t testing.TB, faults map[string]any) {
	t.Helper()
	body, _ := json.Marshal(faults)
	resp, err := http.Post(s.SimURL+"/_sim/faults", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("POST /_sim/faults: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST /_sim/faults: HTTP %d %s", resp.StatusCode, b)
	}
}

// ClearSimFaults DELETEs {sim}/_sim/faults.
func (s *Stack) ClearSimFaults(t testing.TB) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, s.SimURL+"/_sim/faults", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("DELETE /_sim/faults: %v", err)
	}
	resp.Body.Close()
}

// VM is a compute node instance as the simulator's REST API reports it.
type VM struct {
	ID         string
	NodeID     string
	Deployment string
	State      string
	Hostname   string
	IP         string
}

// SimVMs lists compute instances (host_id == id) of one deployment through the Cloudify REST API
// of the simulator (basic auth admin/admin, tenant default_tenant).
func (s *Stack) SimVMs(t testing.TB, deployment string) []VM {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet,
		s.SimURL+"/api/v3.1/node-instances?_size=1000&deployment_id="+deployment, nil)
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:admin")))
	req.Header.Set("Tenant", "default_tenant")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET node-instances: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET node-instances: HTTP %d %s", resp.StatusCode, b)
	}
	var doc struct {
		Items []struct {
			ID                string         `json:"id"`
			NodeID            string         `json:"node_id"`
			HostID            string         `json:"host_id"`
			DeploymentID      string         `json:"deployment_id"`
			State             string         `json:"state"`
			RuntimeProperties map[string]any `json:"runtime_properties"`
		} `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatalf("decode node-instances: %v", err)
	}
	var out []VM
	for _, it := range doc.Items {
		if it.HostID != it.ID || it.DeploymentID != deployment {
			continue
		}
		vm := VM{ID: it.ID, NodeID: it.NodeID, Deployment: it.DeploymentID, State: it.State}
		if h, ok := it.RuntimeProperties["hostname"].(string); ok {
			vm.Hostname = h
		}
		if ip, ok := it.RuntimeProperties["ip"].(string); ok {
			vm.IP = ip
		}
		out = append(out, vm)
	}
	return out
}

// Eventually polls cond every 200 ms until it returns true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last: %s)", timeout, what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
