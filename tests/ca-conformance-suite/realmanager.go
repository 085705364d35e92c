package suite

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	apiv1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider"
	"k8s.io/autoscaler/cluster-autoscaler/clusterstate"

	"autoscaler-cloudify/tests/ca-harness"
)

// The real-manager mode (issue 19): the provider against a REAL Cloudify Manager, driven by CA's
// own client. Its deployments are those of RealManagerScenario, made from the manager tier's
// blueprints by tests/manager/fixtures.py; tests/manager/run.sh creates them and runs this with
// the manager's environment and CA_CONFORMANCE_MANAGER=1.
const (
	RealManagerScenario = "../ca-conformance-suite/testdata/realmanager-scenario.yaml"
	RealManagerConfig   = "../ca-conformance-suite/testdata/realmanager-provider.yaml"
	realDeployment      = "realmgr-conf-pool"
	realGroup           = "workers"
	realGroupID         = realDeployment + "/" + realGroup
	// The quota text of the tier's fault switch (tests/manager/blueprints/scripts/vm_create.py).
	realQuota = "Quota exceeded for instances"
)

// realRun is one run of the scenario: the stack, CA's provider, and what the invariants are
// checked against (every accepted IncreaseSize and DeleteNodes, the operator's own executions).
type realRun struct {
	m        *harness.Manager
	s        *harness.Stack
	cp       cloudprovider.CloudProvider
	front    *harness.RESTFront // nil: no local REST service to restart
	min, max int

	mu        sync.Mutex
	increases []int           // deltas of accepted IncreaseSize calls, in order
	deletes   map[string]bool // VM instance ids named by DeleteNodes calls (accepted or in flight)
	refused   map[string]bool // ... of which the call was refused
	operator  map[string]bool // executions the suite started as an operator
	before    map[string]bool // scale executions that existed before the run
	mon       *monitor
}

// monitor polls Cloudify (and the provider, through a second CA client) all along: the group's
// counts and CA's target within [min, max], and every VM that was `started` and went away.
type monitor struct {
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	started  map[string]bool // VM ids seen started
	removed  map[string]string
	problems []string
	polls    int
	maxSeen  int
}

func (r *realRun) startMonitor(t *testing.T, second cloudprovider.CloudProvider) {
	mon := &monitor{stop: make(chan struct{}), done: make(chan struct{}), started: map[string]bool{}, removed: map[string]string{}}
	r.mon = mon
	go func() {
		defer close(mon.done)
		for {
			select {
			case <-mon.stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			var problems []string
			if p, err := r.m.TryGroup(realDeployment, realGroup); err == nil {
				for name, v := range map[string]int{"current_instances": p.Current, "planned_instances": p.Planned} {
					if v < r.min || v > r.max {
						problems = append(problems, fmt.Sprintf("Cloudify %s = %d outside [%d, %d]", name, v, r.min, r.max))
					}
				}
			}
			vms, err := r.m.TryGroupVMs(realDeployment, realGroup)
			if err == nil {
				mon.mu.Lock()
				for id, vm := range vms {
					if vm.State == "started" {
						mon.started[id] = true
					}
				}
				for id := range mon.started {
					vm, ok := vms[id]
					if _, done := mon.removed[id]; done {
						continue
					}
					if !ok {
						mon.removed[id] = "gone"
					} else if vm.State != "started" {
						mon.removed[id] = vm.State
					}
				}
				mon.mu.Unlock()
			}
			if second.Refresh() == nil {
				for _, g := range second.NodeGroups() {
					if g.Id() != realGroupID {
						continue
					}
					if n, err := g.TargetSize(); err == nil {
						if n < r.min || n > r.max {
							problems = append(problems, fmt.Sprintf("TargetSize = %d outside [%d, %d]", n, r.min, r.max))
						}
						mon.mu.Lock()
						if n > mon.maxSeen {
							mon.maxSeen = n
						}
						mon.mu.Unlock()
					}
				}
			}
			mon.mu.Lock()
			mon.polls++
			for _, p := range problems {
				if len(mon.problems) < 20 {
					mon.problems = append(mon.problems, time.Now().Format("15:04:05.000 ")+p)
				}
			}
			mon.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(mon.stop); <-mon.done })
}

// checkInvariants fails the test on any invariant broken so far: counts or target outside
// [min, max], a started VM removed that no DeleteNodes named (or only a refused one).
func (r *realRun) checkInvariants(t *testing.T, where string) {
	t.Helper()
	r.mon.mu.Lock()
	problems := append([]string(nil), r.mon.problems...)
	removed := map[string]string{}
	for k, v := range r.mon.removed {
		removed[k] = v
	}
	polls := r.mon.polls
	r.mon.mu.Unlock()
	r.mu.Lock()
	for id, how := range removed {
		if !r.deletes[id] || r.refused[id] {
			problems = append(problems, fmt.Sprintf("VM %s was started and is now %s, but no accepted DeleteNodes named it (named: %v, refused: %v)",
				id, how, harness.SortedKeys(r.deletes), harness.SortedKeys(r.refused)))
		}
	}
	r.mu.Unlock()
	for _, p := range problems {
		t.Errorf("invariant broken (%s): %s", where, p)
	}
	t.Logf("invariants hold (%s): %d monitor polls, %d VMs removed, all named by an accepted DeleteNodes", where, polls, len(removed))
}

func (r *realRun) group(t *testing.T) cloudprovider.NodeGroup {
	t.Helper()
	return groupByID(t, r.cp, realGroupID)
}

func (r *realRun) increase(t *testing.T, delta int) error {
	t.Helper()
	err := r.group(t).IncreaseSize(delta)
	if err == nil {
		r.mu.Lock()
		r.increases = append(r.increases, delta)
		r.mu.Unlock()
	}
	return err
}

// deleteNodes is CA's DeleteNodes; the VMs are recorded as named before the call (the
// monitor may see them go before it returns) and as refused if it fails.
func (r *realRun) deleteNodes(t *testing.T, nodes []*apiv1.Node) error {
	t.Helper()
	var vms []string
	for _, n := range nodes {
		vms = append(vms, n.Spec.ProviderID[strings.LastIndex(n.Spec.ProviderID, "/")+1:])
	}
	r.mu.Lock()
	for _, v := range vms {
		r.deletes[v] = true
	}
	r.mu.Unlock()
	err := r.group(t).DeleteNodes(nodes)
	if err != nil {
		r.mu.Lock()
		for _, v := range vms {
			r.refused[v] = true
		}
		r.mu.Unlock()
	}
	return err
}

func realNode(vm harness.Instance) *apiv1.Node {
	return &apiv1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: vm.Hostname(), Labels: map[string]string{"kubernetes.io/hostname": vm.Hostname()}},
		Spec:       apiv1.NodeSpec{ProviderID: providerID(realDeployment, vm.ID)},
	}
}

// settle refreshes like CA's loop until CA sees `want` instances, all Running without error,
// exactly the provider ids of Cloudify's started VMs, and Cloudify's group is idle at `want`
// (no scale execution still running: it may still read `started` after its modification ended),
// as of a provider snapshot read after Cloudify was seen idle (a snapshot from before may still
// count a finished scale as one that could roll back, and the provider is right to refuse a
// deletion on it).
func (r *realRun) settle(t *testing.T, want int) map[string]harness.Instance {
	t.Helper()
	var vms map[string]harness.Instance
	idleAt := -1 // the provider's refresh count when Cloudify was first seen idle at `want`
	harness.Eventually(t, 240*time.Second, fmt.Sprintf("%s settled at %d", realGroupID, want), func() (bool, string) {
		refreshes := r.s.RefreshesOK(t)
		if err := r.cp.Refresh(); err != nil {
			return false, "Refresh: " + err.Error()
		}
		insts, err := r.group(t).Nodes()
		if err != nil {
			return false, "Nodes: " + err.Error()
		}
		p := r.m.Group(t, realDeployment, realGroup)
		for _, e := range r.m.ScaleExecutions(t, realDeployment) {
			if !e.Ended() {
				idleAt = -1
				return false, fmt.Sprintf("execution %s still %s", e.ID, e.Status)
			}
		}
		vms = r.m.GroupVMs(t, realDeployment, realGroup)
		ids := map[string]bool{}
		for id, vm := range vms {
			if vm.State == "started" {
				ids[providerID(realDeployment, id)] = true
			}
		}
		state := fmt.Sprintf("CA %s; Cloudify current=%d planned=%d started=%d of %d VMs", describe(insts), p.Current, p.Planned, len(ids), len(vms))
		if p.Current != want || p.Planned != want || len(vms) != want || len(ids) != want {
			idleAt = -1
			return false, state
		}
		if idleAt < 0 {
			idleAt = refreshes
		}
		if refreshes < idleAt+2 {
			return false, state + fmt.Sprintf("; provider refreshes %d, waiting for %d", refreshes, idleAt+2)
		}
		if len(insts) != want {
			return false, state
		}
		for _, i := range insts {
			if i.Status == nil || i.Status.State != cloudprovider.InstanceRunning || i.Status.ErrorInfo != nil || !ids[i.Id] {
				return false, state
			}
		}
		return mustTarget(t, r.group(t)) == want, state + fmt.Sprintf(" target=%d", mustTarget(t, r.group(t)))
	})
	return vms
}

// newest returns the newest started VM (highest instance index is not in the id: by hostname
// order is as good as any; the test only needs one it did not delete already).
func newest(vms map[string]harness.Instance, not ...map[string]harness.Instance) harness.Instance {
	ids := harness.SortedKeys(vms)
	for i := len(ids) - 1; i >= 0; i-- {
		skip := false
		for _, n := range not {
			_, in := n[ids[i]]
			skip = skip || in
		}
		if !skip {
			return vms[ids[i]]
		}
	}
	return harness.Instance{}
}

// waitErrorInstance refreshes until CA sees an instance with errorInfo, and returns it.
func (r *realRun) waitErrorInstance(t *testing.T) cloudprovider.Instance {
	t.Helper()
	var failed cloudprovider.Instance
	harness.Eventually(t, 240*time.Second, "an instance with errorInfo", func() (bool, string) {
		if err := r.cp.Refresh(); err != nil {
			return false, err.Error()
		}
		insts, err := r.group(t).Nodes()
		if err != nil {
			return false, err.Error()
		}
		for _, i := range insts {
			if i.Status != nil && i.Status.ErrorInfo != nil {
				failed = i
				return true, ""
			}
		}
		return false, describe(insts)
	})
	return failed
}

func (r *realRun) cmd(t *testing.T, args ...string) string {
	t.Helper()
	c := exec.Command(r.s.Bin, args...)
	c.Env = append(c.Environ(), "CLOUDIFY_PASSWORD="+r.m.Password, "CLOUDIFY_TOKEN="+r.m.Token)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("autoscaler-cloudify %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// RealManager runs the provider's main paths against a real Cloudify Manager through CA's
// client: scale-out, exact scale-in of one node and of a batch, failed scale-outs with and
// without rollback (cleaned up by CA's DeleteNodes), a left-over started modification, queued
// executions, the REST service restarted in the middle of a scale, and `check` / `inspect`;
// the invariants are checked from Cloudify's side all along.
func RealManager(t *testing.T, v Version) {
	m := harness.ManagerFromEnv(t, "CA_CONFORMANCE_MANAGER")
	front := harness.StartRESTFront(t)
	url := m.URL
	if front != nil {
		url = front.URL // the provider's own REST service, restartable
	} else {
		t.Logf("MANAGER_REST_FRONT not set (an existing manager): the REST-restart step is skipped")
	}
	secret, env := "password_env: CLOUDIFY_PASSWORD", []string{"CLOUDIFY_PASSWORD=" + m.Password}
	if m.Token != "" {
		secret, env = "token_env: CLOUDIFY_TOKEN", []string{"CLOUDIFY_TOKEN=" + m.Token}
	}
	pki := harness.NewPKI(t)
	s := harness.StartServe(t, RealManagerConfig, map[string]string{"CLOUDIFY_URL": url, "CLOUDIFY_TENANT": m.Tenant,
		"CLOUDIFY_USER": m.User, "CLOUDIFY_SECRET": secret},
		[]string{"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.CACert}, env)
	cc := s.CloudConfig(t, fmt.Sprintf("address: %q\ncert: %q\nkey: %q\ncacert: %q\ngrpc_timeout: 10s\n",
		s.GRPCAddr, pki.ClientCert, pki.ClientKey, pki.CACert))
	props := m.Group(t, realDeployment, realGroup)
	r := &realRun{m: m, s: s, cp: v.BuildExternalGrpc(cc), front: front, min: props.Min, max: props.Max,
		deletes: map[string]bool{}, refused: map[string]bool{}, operator: map[string]bool{}, before: map[string]bool{}}
	for _, e := range m.ScaleExecutions(t, realDeployment) {
		r.before[e.ID] = true
	}
	r.startMonitor(t, v.BuildExternalGrpc(cc))
	t0 := time.Now()
	defer func() { t.Logf("real-manager scenario took %.0f s", time.Since(t0).Seconds()) }()

	var base int
	var initial map[string]harness.Instance
	t.Run("Discovery", func(t *testing.T) {
		if err := r.cp.Refresh(); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		g := r.group(t)
		if g.MinSize() != r.min || g.MaxSize() != r.max {
			t.Fatalf("%s [min, max] = [%d, %d], want the scaling policy's [%d, %d]", realGroupID, g.MinSize(), g.MaxSize(), r.min, r.max)
		}
		base = props.Current
		initial = r.settle(t, base)
		t.Logf("%s at %d: %v", realGroupID, base, harness.SortedKeys(initial))
		vm := newest(initial)
		got, err := r.cp.NodeGroupForNode(realNode(vm))
		if err != nil || got == nil || got.Id() != realGroupID {
			t.Fatalf("NodeGroupForNode(%s) = %v, %v", vm.ID, got, err)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("CheckAndInspect", func(t *testing.T) {
		out := r.cmd(t, "check", "--config", s.ConfigPath)
		t.Logf("check:\n%s", out)
		want := fmt.Sprintf("%s %d %d %d", realGroupID, r.min, r.max, base)
		if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
			t.Errorf("check does not list %q", want)
		}
		out = r.cmd(t, "inspect", "--cloud-config", cc, "groups")
		t.Logf("inspect groups:\n%s", out)
		if !strings.Contains(out, realGroupID) {
			t.Errorf("inspect groups does not list %s", realGroupID)
		}
		out = r.cmd(t, "inspect", "--cloud-config", cc, "nodes", realGroupID)
		for id := range initial {
			if !strings.Contains(out, providerID(realDeployment, id)) {
				t.Errorf("inspect nodes does not list %s:\n%s", id, out)
			}
		}
	})

	t.Run("ScaleOut", func(t *testing.T) {
		if err := r.increase(t, 1); err != nil {
			t.Fatalf("IncreaseSize(1): %v", err)
		}
		if n := mustTarget(t, r.group(t)); n != base+1 {
			t.Fatalf("TargetSize right after IncreaseSize(1) = %d, want %d", n, base+1)
		}
		seen := watchTransitions(t, r.cp, realGroupID, 240*time.Second, allRunning(base+1))
		t.Logf("states CA saw during the scale-out: %v", seen)
		r.settle(t, base+1)
		r.checkInvariants(t, "scale-out")
	})

	t.Run("ScaleIn/one", func(t *testing.T) {
		vms := r.settle(t, base+1)
		victim := newest(vms)
		if err := r.deleteNodes(t, []*apiv1.Node{realNode(victim)}); err != nil {
			t.Fatalf("DeleteNodes(%s): %v", victim.ID, err)
		}
		if n := mustTarget(t, r.group(t)); n != base {
			t.Fatalf("TargetSize right after DeleteNodes = %d, want %d", n, base)
		}
		after := r.settle(t, base)
		if _, still := after[victim.ID]; still || len(after) != base {
			t.Fatalf("after deleting %s: %v", victim.ID, harness.SortedKeys(after))
		}
		r.checkInvariants(t, "scale-in of one node")
	})

	t.Run("ScaleIn/batch", func(t *testing.T) {
		before := r.settle(t, base)
		if err := r.increase(t, 2); err != nil {
			t.Fatalf("IncreaseSize(2): %v", err)
		}
		vms := r.settle(t, base+2)
		a := newest(vms, before)
		b := newest(vms, before, map[string]harness.Instance{a.ID: a})
		// CA's scale-down deletes nodes in parallel, one DeleteNodes per node.
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, vm := range []harness.Instance{a, b} {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = r.deleteNodes(t, []*apiv1.Node{realNode(vm)}) }()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent DeleteNodes: %v", err)
		}
		after := r.settle(t, base)
		if strings.Join(harness.SortedKeys(after), ",") != strings.Join(harness.SortedKeys(before), ",") {
			t.Fatalf("after deleting %s and %s: %v, want %v", a.ID, b.ID, harness.SortedKeys(after), harness.SortedKeys(before))
		}
		r.checkInvariants(t, "batch scale-in")
	})

	for _, tc := range []struct {
		name, fail string
		wantClass  cloudprovider.InstanceErrorClass
	}{{"quota", "quota", cloudprovider.OutOfResourcesErrorClass}} {
		t.Run("FailedScaleOut/rollback/"+tc.name, func(t *testing.T) {
			before := r.settle(t, base)
			m.SetFault(t, realDeployment, map[string]any{"fail": tc.fail, "once": fmt.Sprintf("conf-%d", time.Now().UnixNano()), "nodes": []string{"worker_host"}})
			t.Cleanup(func() { m.SetFault(t, realDeployment, nil) })
			if err := r.increase(t, 1); err != nil {
				t.Fatalf("IncreaseSize(1): %v", err)
			}
			failed := r.waitErrorInstance(t)
			ei := failed.Status.ErrorInfo
			t.Logf("instance error reached CA: id=%s state=%s class=%d code=%q message=%q", failed.Id, stateName(failed.Status.State), ei.ErrorClass, ei.ErrorCode, ei.ErrorMessage)
			if failed.Status.State != cloudprovider.InstanceCreating || ei.ErrorClass != tc.wantClass || ei.ErrorCode == "" {
				t.Errorf("want Creating, class %d and a code", tc.wantClass)
			}
			if !strings.Contains(ei.ErrorMessage, realQuota) {
				t.Errorf("message %q lacks Cloudify's quota text", ei.ErrorMessage)
			}
			if err := r.deleteNodes(t, []*apiv1.Node{clusterstate.FakeNode(failed, cloudprovider.FakeNodeCreateError)}); err != nil {
				t.Fatalf("DeleteNodes(create-error %s): %v", failed.Id, err)
			}
			if n := mustTarget(t, r.group(t)); n != base {
				t.Errorf("TargetSize after deleting the failed instance = %d, want %d", n, base)
			}
			_ = r.deleteNodes(t, []*apiv1.Node{clusterstate.FakeNode(failed, cloudprovider.FakeNodeCreateError)})
			if n := mustTarget(t, r.group(t)); n != base {
				t.Errorf("TargetSize after a repeated create-error delete = %d, want %d", n, base)
			}
			after := r.settle(t, base)
			if strings.Join(harness.SortedKeys(after), ",") != strings.Join(harness.SortedKeys(before), ",") {
				t.Errorf("VMs after the rolled-back scale-out: %v, want %v", harness.SortedKeys(after), harness.SortedKeys(before))
			}
			r.checkInvariants(t, "failed scale-out with rollback")
		})
	}

	// The provider never sends rollback_if_failed (the workflow's default, true, applies): a
	// scale-out that fails without rollback is an operator's. It leaves a half-created VM and a
	// started modification behind.
	t.Run("FailedScaleOut/no-rollback", func(t *testing.T) {
		before := r.settle(t, base)
		m.SetFault(t, realDeployment, map[string]any{"fail": "other", "once": fmt.Sprintf("conf-%d", time.Now().UnixNano()), "nodes": []string{"worker_host"}})
		e := m.StartScale(t, realDeployment, map[string]any{"scalable_entity_name": realGroup, "delta": 1, "rollback_if_failed": false})
		r.mu.Lock()
		r.operator[e.ID] = true
		r.mu.Unlock()
		if e = m.WaitExecution(t, e.ID, 240*time.Second); e.Status != "failed" {
			t.Fatalf("operator's scale ended %s, want failed", e.Status)
		}
		m.SetFault(t, realDeployment, nil)
		var half harness.Instance
		for id, vm := range m.GroupVMs(t, realDeployment, realGroup) {
			if _, old := before[id]; !old {
				half = vm
			}
		}
		if half.ID == "" || half.State == "started" {
			t.Fatalf("no half-created VM left: %v", m.GroupVMs(t, realDeployment, realGroup))
		}
		t.Logf("left behind: %s in state %s, modifications started: %d", half.ID, half.State, len(m.Modifications(t, realDeployment, "started")))
		failed := r.waitErrorInstance(t)
		ei := failed.Status.ErrorInfo
		t.Logf("instance error reached CA: id=%s class=%d code=%q message=%q", failed.Id, ei.ErrorClass, ei.ErrorCode, ei.ErrorMessage)
		if ei.ErrorClass != cloudprovider.OtherErrorClass || ei.ErrorCode == "" || failed.Status.State != cloudprovider.InstanceCreating {
			t.Errorf("want Creating, class Other and a code")
		}
		insts, _ := r.group(t).Nodes()
		t.Logf("CA sees: %s, target %d", describe(insts), mustTarget(t, r.group(t)))
		if err := r.deleteNodes(t, []*apiv1.Node{clusterstate.FakeNode(failed, cloudprovider.FakeNodeCreateError)}); err != nil {
			t.Fatalf("DeleteNodes(create-error %s): %v", failed.Id, err)
		}
		if n := mustTarget(t, r.group(t)); n != base {
			t.Errorf("TargetSize after deleting the failed instance = %d, want %d", n, base)
		}
		// The half-created VM never registers a Node: CA deletes it as an unregistered node once
		// max-node-provision-time passed. Every scale of the deployment now carries
		// abort_started, which rolls the left-over modification back (removing this VM) before
		// it scales: a scale-in naming it would then remove another VM. The provider refuses.
		halfInst := cloudprovider.Instance{Id: providerID(realDeployment, half.ID)}
		err := r.deleteNodes(t, []*apiv1.Node{clusterstate.FakeNode(halfInst, cloudprovider.FakeNodeUnregistered)})
		t.Logf("DeleteNodes(unregistered half-created %s): %v", half.ID, err)
		if err == nil {
			t.Errorf("DeleteNodes of a VM the left-over modification added was accepted")
		}
		time.Sleep(5 * time.Second)
		if n := mustTarget(t, r.group(t)); n != base {
			t.Errorf("TargetSize = %d, want %d", n, base)
		}
		r.checkInvariants(t, "failed scale-out without rollback")
	})

	t.Run("LeftoverModification", func(t *testing.T) {
		if len(m.Modifications(t, realDeployment, "started")) != 1 {
			t.Fatalf("want the left-over started modification: %+v", m.Modifications(t, realDeployment, "started"))
		}
		if err := r.increase(t, 1); err != nil {
			t.Fatalf("IncreaseSize(1) on a deployment with a left-over modification: %v", err)
		}
		if n := mustTarget(t, r.group(t)); n != base+1 {
			t.Errorf("TargetSize = %d, want %d", n, base+1)
		}
		r.settle(t, base+1)
		if left := m.Modifications(t, realDeployment, "started"); len(left) != 0 {
			t.Errorf("started modifications after the scale: %+v", left)
		}
		execs := m.ScaleExecutions(t, realDeployment)
		last := execs[len(execs)-1]
		if last.Parameters["abort_started"] != true || last.Status != "terminated" {
			t.Errorf("the scale after the left-over: abort_started=%v status=%s", last.Parameters["abort_started"], last.Status)
		}
		r.checkInvariants(t, "left-over modification")
	})

	t.Run("QueuedExecutions", func(t *testing.T) {
		r.settle(t, base+1)
		m.SetFault(t, realDeployment, map[string]any{"delay_s": 8, "nodes": []string{"worker_host"}})
		t.Cleanup(func() { m.SetFault(t, realDeployment, nil) })
		if err := r.increase(t, 1); err != nil {
			t.Fatalf("IncreaseSize(1): %v", err)
		}
		harness.Eventually(t, 120*time.Second, "the first scale running", func() (bool, string) {
			return len(m.Modifications(t, realDeployment, "started")) == 1, ""
		})
		if err := r.increase(t, 1); err != nil {
			t.Fatalf("second IncreaseSize(1): %v", err)
		}
		if n := mustTarget(t, r.group(t)); n != base+3 {
			t.Fatalf("TargetSize with one running and one queued = %d, want %d", n, base+3)
		}
		execs := m.ScaleExecutions(t, realDeployment)
		queued := execs[len(execs)-1]
		if queued.Status != "queued" {
			t.Fatalf("the second scale is %s, want queued", queued.Status)
		}
		if err := r.group(t).DecreaseTargetSize(-1); err != nil {
			t.Fatalf("DecreaseTargetSize(-1) with one queued: %v", err)
		}
		if n := mustTarget(t, r.group(t)); n != base+2 {
			t.Errorf("TargetSize after DecreaseTargetSize(-1) = %d, want %d", n, base+2)
		}
		if e := m.WaitExecution(t, queued.ID, 120*time.Second); e.Status != "cancelled" {
			t.Errorf("queued scale ended %s, want cancelled", e.Status)
		}
		r.settle(t, base+2)
		r.checkInvariants(t, "queued executions")
	})

	t.Run("RESTRestartMidScale", func(t *testing.T) {
		if front == nil {
			t.Skip("no local REST service to restart (an existing manager)")
		}
		r.settle(t, base+2)
		m.SetFault(t, realDeployment, map[string]any{"delay_s": 10, "nodes": []string{"worker_host"}})
		t.Cleanup(func() { m.SetFault(t, realDeployment, nil) })
		if err := r.increase(t, 1); err != nil {
			t.Fatalf("IncreaseSize(1): %v", err)
		}
		harness.Eventually(t, 120*time.Second, "the scale running", func() (bool, string) {
			return len(m.Modifications(t, realDeployment, "started")) == 1, ""
		})
		front.Stop(t)
		down := time.Now()
		// Reads answer from the snapshot; a mutation fails fast and is not counted.
		if n := mustTarget(t, r.group(t)); n != base+3 {
			t.Errorf("TargetSize while the REST service is down = %d, want %d", n, base+3)
		}
		if _, err := r.group(t).Nodes(); err != nil {
			t.Errorf("Nodes while the REST service is down: %v", err)
		}
		t0 := time.Now()
		err := r.group(t).IncreaseSize(1)
		t.Logf("IncreaseSize(1) while the REST service is down: %v (after %.1f s)", err, time.Since(t0).Seconds())
		if err == nil {
			r.mu.Lock()
			r.increases = append(r.increases, 1)
			r.mu.Unlock()
			t.Errorf("IncreaseSize succeeded with the REST service down")
		}
		if n := mustTarget(t, r.group(t)); n != base+3 {
			t.Errorf("TargetSize after the refused increase = %d, want %d", n, base+3)
		}
		time.Sleep(3 * time.Second)
		front.Start(t)
		t.Logf("REST service down for %.1f s", time.Since(down).Seconds())
		r.settle(t, base+3)
		r.checkInvariants(t, "REST service restarted mid-scale")
	})

	// Back to where it started (so a kept manager's next run reuses the deployment: fixtures.py).
	t.Run("BackToStart", func(t *testing.T) {
		p := m.Group(t, realDeployment, realGroup)
		vms := r.settle(t, p.Current)
		ids := harness.SortedKeys(vms)
		var nodes []*apiv1.Node
		for _, id := range ids[:len(ids)-base] {
			nodes = append(nodes, realNode(vms[id]))
		}
		if err := r.deleteNodes(t, nodes); err != nil {
			t.Fatalf("DeleteNodes(%d nodes): %v", len(nodes), err)
		}
		left := r.settle(t, base)
		// Deleting past min is refused before any Cloudify call.
		var all []*apiv1.Node
		for _, id := range harness.SortedKeys(left)[:base-r.min+1] {
			all = append(all, realNode(left[id]))
		}
		if err := r.group(t).DeleteNodes(all); err == nil {
			t.Errorf("DeleteNodes of %d nodes at %d with min %d succeeded", len(all), base, r.min)
		}
	})

	t.Run("Invariants", func(t *testing.T) {
		r.checkInvariants(t, "end")
		// No accepted increase lost or doubled: the provider's scale-outs are exactly the
		// accepted IncreaseSize calls, in order; its scale-ins name only nodes CA asked to delete.
		var ups []int
		var lines []string
		for _, e := range m.ScaleExecutions(t, realDeployment) {
			if r.before[e.ID] || r.operator[e.ID] {
				continue
			}
			lines = append(lines, fmt.Sprintf("%s %+d %v %s", e.ID[:8], e.Delta(), e.Include(), e.Status))
			if e.Delta() > 0 {
				ups = append(ups, e.Delta())
				continue
			}
			for _, id := range e.Include() {
				if !r.deletes[id] || r.refused[id] {
					t.Errorf("execution %s removes %s, which no accepted DeleteNodes named", e.ID, id)
				}
			}
			if -e.Delta() != len(e.Include()) {
				t.Errorf("execution %s: delta %d with include_instances %v", e.ID, e.Delta(), e.Include())
			}
		}
		t.Logf("the provider's scale executions: %s", strings.Join(lines, "; "))
		if fmt.Sprint(ups) != fmt.Sprint(r.increases) {
			t.Errorf("scale-out executions %v != accepted IncreaseSize calls %v", ups, r.increases)
		}
		r.mon.mu.Lock()
		t.Logf("highest target seen %d (max %d)", r.mon.maxSeen, r.max)
		r.mon.mu.Unlock()
	})
}
