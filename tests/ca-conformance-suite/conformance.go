package suite

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	apiv1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider"
	"k8s.io/autoscaler/cluster-autoscaler/clusterstate"
	"k8s.io/autoscaler/cluster-autoscaler/config"

	"autoscaler-cloudify/tests/ca-harness"
)

const (
	workersID = "k8s-pool-a/workers"
	gpuID     = "k8s-pool-b/gpu-workers"
	batchID   = "k8s-pool-c/batch"
	tenant    = "default_tenant"
)

// allRPCs is the service's method set; Conformance fails if one was never called.
var allRPCs = []string{
	"NodeGroups", "NodeGroupForNode", "PricingNodePrice", "PricingPodPrice", "GPULabel",
	"GetAvailableGPUTypes", "Cleanup", "Refresh", "NodeGroupTargetSize", "NodeGroupIncreaseSize",
	"NodeGroupDeleteNodes", "NodeGroupDecreaseTargetSize", "NodeGroupNodes", "NodeGroupTemplateNodeInfo",
	"NodeGroupGetOptions",
}

// startMTLS starts simulator + serve with mTLS and returns CA's provider built from a cloud-config
// with cert/key/cacert, the way the e2e tier and a real deployment connect.
func startMTLS(t *testing.T, v Version) (*harness.Stack, cloudprovider.CloudProvider) {
	t.Helper()
	pki := harness.NewPKI(t)
	s := harness.StartStack(t, Scenario, harness.ServeOptions{
		ConfigTemplate: ProviderConfig,
		ExtraArgs:      []string{"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.CACert},
	})
	// CA's default deadline (5 s) for every call, mutations included.
	cc := s.CloudConfig(t, fmt.Sprintf("address: %q\ncert: %q\nkey: %q\ncacert: %q\ngrpc_timeout: 5s\n",
		s.GRPCAddr, pki.ClientCert, pki.ClientKey, pki.CACert))
	return s, v.BuildExternalGrpc(cc)
}

func providerID(deployment, vm string) string {
	return fmt.Sprintf("cloudify://%s/%s/%s", tenant, deployment, vm)
}

func groupByID(t *testing.T, p cloudprovider.CloudProvider, id string) cloudprovider.NodeGroup {
	t.Helper()
	for _, g := range p.NodeGroups() {
		if g.Id() == id {
			return g
		}
	}
	t.Fatalf("node group %q not in NodeGroups()", id)
	return nil
}

// kubeNode is what a real worker's Node object looks like to CA.
func kubeNode(vm harness.VM, deployment string) *apiv1.Node {
	return &apiv1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   vm.Hostname,
			Labels: map[string]string{"kubernetes.io/hostname": vm.Hostname, "kubernetes.io/os": "linux"},
		},
		Spec: apiv1.NodeSpec{ProviderID: providerID(deployment, vm.ID)},
	}
}

// stateName names a cloudprovider.InstanceState (CA's type has no String method).
func stateName(st cloudprovider.InstanceState) string {
	switch st {
	case cloudprovider.InstanceRunning:
		return "Running"
	case cloudprovider.InstanceCreating:
		return "Creating"
	case cloudprovider.InstanceDeleting:
		return "Deleting"
	}
	return fmt.Sprintf("State(%d)", int(st))
}

func describe(insts []cloudprovider.Instance) string {
	var parts []string
	for _, i := range insts {
		st := "nil"
		if i.Status != nil {
			st = stateName(i.Status.State)
			if i.Status.ErrorInfo != nil {
				st += fmt.Sprintf("+err(class=%d,code=%s,msg=%q)", i.Status.ErrorInfo.ErrorClass,
					i.Status.ErrorInfo.ErrorCode, i.Status.ErrorInfo.ErrorMessage)
			}
		}
		parts = append(parts, i.Id+"="+st)
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, " ") + "]"
}

// watchTransitions polls Refresh + Nodes like CA's loop (every 50 ms here) until `done` says so,
// and returns, per instance id, the sequence of distinct states it was seen in. Every instance
// must carry a status (state unspecified reaches CA as a nil status).
func watchTransitions(t *testing.T, p cloudprovider.CloudProvider, id string, timeout time.Duration, done func([]cloudprovider.Instance) bool) map[string][]string {
	t.Helper()
	seen := map[string][]string{}
	deadline := time.Now().Add(timeout)
	for {
		if err := p.Refresh(); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		insts, err := groupByID(t, p, id).Nodes()
		if err != nil {
			t.Fatalf("Nodes: %v", err)
		}
		present := map[string]bool{}
		for _, i := range insts {
			present[i.Id] = true
			st := "nil"
			if i.Status != nil {
				st = stateName(i.Status.State)
				if i.Status.ErrorInfo != nil {
					st += "+error"
				}
			} else {
				t.Errorf("instance %s has no status (state unspecified)", i.Id)
			}
			if h := seen[i.Id]; len(h) == 0 || h[len(h)-1] != st {
				seen[i.Id] = append(h, st)
			}
		}
		for k, h := range seen {
			if !present[k] && h[len(h)-1] != "gone" {
				seen[k] = append(h, "gone")
			}
		}
		if done(insts) {
			return seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out watching %s: %v", id, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func allRunning(want int) func([]cloudprovider.Instance) bool {
	return func(insts []cloudprovider.Instance) bool {
		if len(insts) != want {
			return false
		}
		for _, i := range insts {
			if i.Status == nil || i.Status.State != cloudprovider.InstanceRunning {
				return false
			}
		}
		return true
	}
}

func mustTarget(t *testing.T, g cloudprovider.NodeGroup) int {
	t.Helper()
	n, err := g.TargetSize()
	if err != nil {
		t.Fatalf("TargetSize(%s): %v", g.Id(), err)
	}
	return n
}

// waitSettled refreshes like CA's loop until Nodes() has `want` instances, all Running, and
// every id equals the provider id the simulator's VMs imply.
func waitSettled(t *testing.T, s *harness.Stack, p cloudprovider.CloudProvider, id, deployment string, want int) []cloudprovider.Instance {
	t.Helper()
	var insts []cloudprovider.Instance
	harness.Eventually(t, 60*time.Second, fmt.Sprintf("%s to settle at %d running instances", id, want), func() (bool, string) {
		if err := p.Refresh(); err != nil {
			return false, "Refresh: " + err.Error()
		}
		var err error
		insts, err = groupByID(t, p, id).Nodes()
		if err != nil {
			return false, "Nodes: " + err.Error()
		}
		if len(insts) != want {
			return false, describe(insts)
		}
		for _, i := range insts {
			if i.Status == nil || i.Status.State != cloudprovider.InstanceRunning || i.Status.ErrorInfo != nil {
				return false, describe(insts)
			}
		}
		return true, ""
	})
	// Ids equal the Node.spec.providerID the kubelet sets: cloudify://<tenant>/<deployment>/<vm instance>.
	vms := s.SimVMs(t, deployment)
	wantIDs := map[string]bool{}
	for _, vm := range vms {
		if vm.State == "started" {
			wantIDs[providerID(deployment, vm.ID)] = true
		}
	}
	for _, i := range insts {
		if !wantIDs[i.Id] {
			t.Fatalf("instance id %q is not the provider id of a started VM of %s; VMs: %+v", i.Id, deployment, vms)
		}
	}
	return insts
}

// Conformance runs the whole scenario against one stack, steps in order (each a subtest named as
// before the suite existed, so `go test -run` filters and logs stay the same per version).
func Conformance(t *testing.T, v Version) {
	s, cp := startMTLS(t, v)

	t.Run("Refresh", func(t *testing.T) {
		if err := cp.Refresh(); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
	})

	t.Run("NodeGroups", func(t *testing.T) {
		want := map[string][2]int{workersID: {1, 10}, gpuID: {0, 4}, batchID: {0, 3}}
		got := map[string][2]int{}
		for _, g := range cp.NodeGroups() {
			got[g.Id()] = [2]int{g.MinSize(), g.MaxSize()}
			t.Logf("group %s min=%d max=%d debug=%q", g.Id(), g.MinSize(), g.MaxSize(), g.Debug())
		}
		if len(got) != len(want) {
			t.Fatalf("NodeGroups = %v, want %v", got, want)
		}
		for id, mm := range want {
			if got[id] != mm {
				t.Errorf("group %s: [min max] = %v, want %v", id, got[id], mm)
			}
		}
	})

	workers := groupByID(t, cp, workersID)
	initial := waitSettled(t, s, cp, workersID, "k8s-pool-a", 2)

	t.Run("Nodes", func(t *testing.T) {
		t.Logf("workers instances: %s", describe(initial))
		if n := mustTarget(t, workers); n != 2 {
			t.Fatalf("TargetSize = %d, want 2", n)
		}
	})

	t.Run("NodeGroupForNode", func(t *testing.T) {
		vms := s.SimVMs(t, "k8s-pool-a")
		if len(vms) == 0 || vms[0].Hostname == "" {
			t.Fatalf("simulator VMs without hostname: %+v", vms)
		}
		vm := vms[0]
		// Managed node: provider id + name.
		g, err := cp.NodeGroupForNode(kubeNode(vm, "k8s-pool-a"))
		if err != nil || g == nil {
			t.Fatalf("NodeGroupForNode(managed) = %v, %v", g, err)
		}
		if g.Id() != workersID || g.MinSize() != 1 || g.MaxSize() != 10 {
			t.Errorf("NodeGroupForNode(managed) = %s [%d,%d]", g.Id(), g.MinSize(), g.MaxSize())
		}
		// Node known by name only (no providerID yet, as right after kubelet registration).
		byName := &apiv1.Node{ObjectMeta: metav1.ObjectMeta{Name: vm.Hostname}}
		g, err = cp.NodeGroupForNode(byName)
		if err != nil || g == nil || g.Id() != workersID {
			t.Errorf("NodeGroupForNode(name only %q) = %v, %v; want %s", vm.Hostname, g, err, workersID)
		}
		// Unmanaged: another cloud's provider id.
		foreign := &apiv1.Node{ObjectMeta: metav1.ObjectMeta{Name: "foreign-1"},
			Spec: apiv1.NodeSpec{ProviderID: "openstack:///0b1c7c1e-1d5f-4a1e-9c3b-000000000001"}}
		g, err = cp.NodeGroupForNode(foreign)
		if err != nil || g != nil {
			t.Errorf("NodeGroupForNode(unmanaged) = %v, %v; want nil, nil", g, err)
		}
		// Control plane: ours, but in no scaling group.
		cps := s.SimVMs(t, "k8s-control-plane")
		if len(cps) == 1 {
			cpNode := kubeNode(cps[0], "k8s-control-plane")
			g, err = cp.NodeGroupForNode(cpNode)
			if err != nil || g != nil {
				t.Errorf("NodeGroupForNode(control plane) = %v, %v; want nil, nil", g, err)
			}
		} else {
			t.Errorf("control plane VMs: %+v", cps)
		}
		// Unknown cloudify instance in a group-less form.
		ghost := &apiv1.Node{ObjectMeta: metav1.ObjectMeta{Name: "ghost"},
			Spec: apiv1.NodeSpec{ProviderID: providerID("k8s-pool-a", "workers_host_zzzzzz")}}
		g, err = cp.NodeGroupForNode(ghost)
		if err != nil || g != nil {
			t.Errorf("NodeGroupForNode(unknown instance) = %v, %v; want nil, nil", g, err)
		}
	})

	var added string
	t.Run("IncreaseSize", func(t *testing.T) {
		if err := workers.IncreaseSize(1); err != nil {
			t.Fatalf("IncreaseSize(1): %v", err)
		}
		// TargetSize must reflect the increase at once, before any Refresh.
		if n := mustTarget(t, workers); n != 3 {
			t.Fatalf("TargetSize right after IncreaseSize(1) = %d, want 3", n)
		}
		// Past max: refused.
		if err := workers.IncreaseSize(100); err == nil {
			t.Errorf("IncreaseSize(100) beyond max 10 succeeded")
		} else {
			t.Logf("IncreaseSize(100) refused: %v", err)
		}
		if err := workers.IncreaseSize(0); err == nil {
			t.Errorf("IncreaseSize(0) succeeded")
		}
		if n := mustTarget(t, workers); n != 3 {
			t.Fatalf("TargetSize after refused increases = %d, want 3", n)
		}
		seen := watchTransitions(t, cp, workersID, 60*time.Second, allRunning(3))
		t.Logf("state transitions seen by CA during the scale-out: %v", seen)
		after := waitSettled(t, s, cp, workersID, "k8s-pool-a", 3)
		old := map[string]bool{}
		for _, i := range initial {
			old[i.Id] = true
		}
		for _, i := range after {
			if !old[i.Id] {
				added = i.Id
			}
		}
		t.Logf("after IncreaseSize: %s (new: %s)", describe(after), added)
	})

	t.Run("DeleteNodes/real", func(t *testing.T) {
		if added == "" {
			t.Skip("no instance was added")
		}
		var vm harness.VM
		for _, v := range s.SimVMs(t, "k8s-pool-a") {
			if providerID("k8s-pool-a", v.ID) == added {
				vm = v
			}
		}
		node := kubeNode(vm, "k8s-pool-a")
		node.Spec.Taints = []apiv1.Taint{{Key: "ToBeDeletedByClusterAutoscaler", Value: "1", Effect: apiv1.TaintEffectNoSchedule}}
		// A node of another group is refused (before any change).
		gpu := groupByID(t, cp, gpuID)
		if err := gpu.DeleteNodes([]*apiv1.Node{node}); err == nil {
			t.Errorf("gpu-workers.DeleteNodes(worker node) succeeded")
		}
		if err := workers.DeleteNodes([]*apiv1.Node{node}); err != nil {
			t.Fatalf("DeleteNodes(%s): %v", node.Name, err)
		}
		if n := mustTarget(t, workers); n != 2 {
			t.Fatalf("TargetSize right after DeleteNodes = %d, want 2", n)
		}
		// Until it is gone the deleted instance must not look Running (CA would count it).
		if insts, err := workers.Nodes(); err == nil {
			t.Logf("right after DeleteNodes: %s", describe(insts))
			for _, i := range insts {
				if i.Id == added && (i.Status == nil || i.Status.State != cloudprovider.InstanceDeleting) {
					t.Errorf("deleted instance listed as %s, want Deleting or absent", describe([]cloudprovider.Instance{i}))
				}
			}
		}
		// A repeated DeleteNodes for the same node (CA retries deletions) must not lower the
		// target a second time.
		err := workers.DeleteNodes([]*apiv1.Node{node})
		t.Logf("repeated DeleteNodes(%s): %v", node.Name, err)
		if n := mustTarget(t, workers); n != 2 {
			t.Fatalf("TargetSize after repeated DeleteNodes = %d, want 2", n)
		}
		seen := watchTransitions(t, cp, workersID, 60*time.Second, allRunning(2))
		t.Logf("state transitions seen by CA during the scale-in: %v", seen)
		after := waitSettled(t, s, cp, workersID, "k8s-pool-a", 2)
		for _, i := range after {
			if i.Id == added {
				t.Fatalf("deleted instance %s still listed: %s", added, describe(after))
			}
		}
	})

	t.Run("DeleteNodes/concurrent", func(t *testing.T) {
		// CA's scale-down deletes one node per call, one goroutine per node, concurrently on the
		// same group. Both calls must succeed, and exactly those two VMs must go.
		before := waitSettled(t, s, cp, workersID, "k8s-pool-a", 2)
		if err := workers.IncreaseSize(2); err != nil {
			t.Fatalf("IncreaseSize(2): %v", err)
		}
		after := waitSettled(t, s, cp, workersID, "k8s-pool-a", 4)
		keep := map[string]bool{}
		for _, i := range before {
			keep[i.Id] = true
		}
		var victims []*apiv1.Node
		for _, vm := range s.SimVMs(t, "k8s-pool-a") {
			if !keep[providerID("k8s-pool-a", vm.ID)] && vm.State == "started" {
				victims = append(victims, kubeNode(vm, "k8s-pool-a"))
			}
		}
		if len(victims) != 2 {
			t.Fatalf("want 2 new VMs, got %d (%s)", len(victims), describe(after))
		}
		errs := make(chan error, len(victims))
		for _, v := range victims {
			go func(n *apiv1.Node) { errs <- workers.DeleteNodes([]*apiv1.Node{n}) }(v)
		}
		for range victims {
			if err := <-errs; err != nil {
				t.Errorf("concurrent DeleteNodes: %v", err)
			}
		}
		if n := mustTarget(t, workers); n != 2 {
			t.Fatalf("TargetSize after 2 concurrent DeleteNodes = %d, want 2", n)
		}
		final := waitSettled(t, s, cp, workersID, "k8s-pool-a", 2)
		for _, i := range final {
			if !keep[i.Id] {
				t.Fatalf("wrong VM removed: left %s, wanted %v", describe(final), keep)
			}
		}
	})

	t.Run("DecreaseTargetSize", func(t *testing.T) {
		// Nothing pending: must refuse (it may never remove existing nodes).
		if err := workers.DecreaseTargetSize(-1); err == nil {
			t.Errorf("DecreaseTargetSize(-1) with no pending capacity succeeded")
		} else {
			t.Logf("DecreaseTargetSize(-1) with nothing pending refused: %v", err)
		}
		if n := mustTarget(t, workers); n != 2 {
			t.Fatalf("TargetSize = %d, want 2", n)
		}
		// Pending capacity: hold executions, ask for +2, cancel 1 of them.
		s.SimFaults(t, map[string]any{"hold_executions": true})
		if err := workers.IncreaseSize(2); err != nil {
			t.Fatalf("IncreaseSize(2): %v", err)
		}
		if n := mustTarget(t, workers); n != 4 {
			t.Fatalf("TargetSize after IncreaseSize(2) = %d, want 4", n)
		}
		if err := workers.DecreaseTargetSize(-1); err != nil {
			t.Fatalf("DecreaseTargetSize(-1) with 2 pending: %v", err)
		}
		if n := mustTarget(t, workers); n != 3 {
			t.Fatalf("TargetSize after DecreaseTargetSize(-1) = %d, want 3", n)
		}
		if err := workers.DecreaseTargetSize(-5); err == nil {
			t.Errorf("DecreaseTargetSize(-5) beyond pending capacity succeeded")
		}
		if err := workers.DecreaseTargetSize(1); err == nil {
			t.Errorf("DecreaseTargetSize(+1) succeeded")
		}
		if n := mustTarget(t, workers); n != 3 {
			t.Fatalf("TargetSize after refused decreases = %d, want 3", n)
		}
		s.SimFaults(t, map[string]any{"hold_executions": false})
		waitSettled(t, s, cp, workersID, "k8s-pool-a", 3)
	})

	t.Run("DeleteNodes/fake-unregistered", func(t *testing.T) {
		insts, err := workers.Nodes()
		if err != nil || len(insts) == 0 {
			t.Fatalf("Nodes: %v %v", insts, err)
		}
		victim := insts[len(insts)-1]
		before := mustTarget(t, workers)
		if err := workers.DeleteNodes([]*apiv1.Node{clusterstate.FakeNode(victim, cloudprovider.FakeNodeUnregistered)}); err != nil {
			t.Fatalf("DeleteNodes(fake unregistered %s): %v", victim.Id, err)
		}
		if n := mustTarget(t, workers); n != before-1 {
			t.Fatalf("TargetSize after fake delete = %d, want %d", n, before-1)
		}
		after := waitSettled(t, s, cp, workersID, "k8s-pool-a", before-1)
		for _, i := range after {
			if i.Id == victim.Id {
				t.Fatalf("fake-deleted %s still listed", victim.Id)
			}
		}
		// Deleting to below min is refused.
		if before-1 == 2 {
			all := []*apiv1.Node{clusterstate.FakeNode(after[0], cloudprovider.FakeNodeUnregistered), clusterstate.FakeNode(after[1], cloudprovider.FakeNodeUnregistered)}
			if err := workers.DeleteNodes(all); err == nil {
				t.Errorf("DeleteNodes below min size succeeded")
			}
		}
	})

	for _, tc := range []struct {
		name      string
		reason    string
		wantClass cloudprovider.InstanceErrorClass
	}{
		{"quota", "Quota exceeded for instances: Requested 1, but already used 20 of 20 instances", cloudprovider.OutOfResourcesErrorClass},
		{"other", "Task failed 'cloudify_openstack.nova_plugin.server.create': boot error", cloudprovider.OtherErrorClass},
	} {
		t.Run("FailedScaleOut/"+tc.name, func(t *testing.T) {
			base := mustTarget(t, workers)
			s.SimFaults(t, map[string]any{"fail_next_executions": 1, "fail_reason": tc.reason})
			t.Cleanup(func() { s.ClearSimFaults(t) })
			if err := workers.IncreaseSize(1); err != nil {
				t.Fatalf("IncreaseSize(1): %v", err)
			}
			var failed cloudprovider.Instance
			harness.Eventually(t, 60*time.Second, "an instance with errorInfo", func() (bool, string) {
				if err := cp.Refresh(); err != nil {
					return false, err.Error()
				}
				insts, err := groupByID(t, cp, workersID).Nodes()
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
			ei := failed.Status.ErrorInfo
			t.Logf("instance error reached CA: id=%s state=%s class=%d code=%q message=%q",
				failed.Id, stateName(failed.Status.State), ei.ErrorClass, ei.ErrorCode, ei.ErrorMessage)
			// CA counts only Creating + ErrorInfo as a create error (clusterstate.GetCreatedNodesWithErrors).
			if failed.Status.State != cloudprovider.InstanceCreating {
				t.Errorf("state = %s, want Creating (else CA ignores the error)", stateName(failed.Status.State))
			}
			if ei.ErrorClass != tc.wantClass {
				t.Errorf("class = %d, want %d", ei.ErrorClass, tc.wantClass)
			}
			if ei.ErrorCode == "" {
				t.Errorf("empty errorCode (CA drops such errorInfo)")
			}
			// CA then deletes it as a fake node (create-error) every loop until it is gone.
			if err := groupByID(t, cp, workersID).DeleteNodes([]*apiv1.Node{clusterstate.FakeNode(failed, cloudprovider.FakeNodeCreateError)}); err != nil {
				t.Fatalf("DeleteNodes(fake create-error %s): %v", failed.Id, err)
			}
			if n := mustTarget(t, workers); n != base {
				t.Errorf("TargetSize after deleting the failed instance = %d, want %d", n, base)
			}
			// CA re-sends this every loop while its cached Nodes() still shows the error: a
			// repeat must not lower the target again.
			err := groupByID(t, cp, workersID).DeleteNodes([]*apiv1.Node{clusterstate.FakeNode(failed, cloudprovider.FakeNodeCreateError)})
			t.Logf("repeated DeleteNodes(fake create-error): %v", err)
			if n := mustTarget(t, workers); n != base {
				t.Errorf("TargetSize after a repeated create-error delete = %d, want %d", n, base)
			}
			waitSettled(t, s, cp, workersID, "k8s-pool-a", base)
		})
	}

	t.Run("TemplateNodeInfo", func(t *testing.T) {
		ni, err := groupByID(t, cp, workersID).TemplateNodeInfo()
		if err != nil || ni == nil || ni.Node() == nil {
			t.Fatalf("TemplateNodeInfo(workers) = %v, %v", ni, err)
		}
		checkWorkersTemplate(t, ni.Node())

		ni, err = groupByID(t, cp, gpuID).TemplateNodeInfo()
		if err != nil || ni == nil || ni.Node() == nil {
			t.Fatalf("TemplateNodeInfo(gpu-workers) = %v, %v", ni, err)
		}
		n := ni.Node()
		if n.Labels["cloudify.co/gpu-type"] != "nvidia-t4" {
			t.Errorf("gpu template labels = %v", n.Labels)
		}
		gpus := n.Status.Allocatable[apiv1.ResourceName("nvidia.com/gpu")]
		if gpus.Value() != 1 {
			t.Errorf("gpu template allocatable nvidia.com/gpu = %s", gpus.String())
		}

		ni, err = groupByID(t, cp, batchID).TemplateNodeInfo()
		if !errors.Is(err, cloudprovider.ErrNotImplemented) {
			t.Errorf("TemplateNodeInfo(batch, no template) = %v, %v; want ErrNotImplemented", ni, err)
		}
	})

	defaults := config.NodeGroupAutoscalingOptions{
		ScaleDownUtilizationThreshold:    0.5,
		ScaleDownGpuUtilizationThreshold: 0.55,
		ScaleDownUnneededTime:            10 * time.Minute,
		ScaleDownUnreadyTime:             20 * time.Minute,
		MaxNodeProvisionTime:             15 * time.Minute,
		ZeroOrMaxNodeScaling:             true, // non-default on purpose: must be echoed
		IgnoreDaemonSetsUtilization:      false,
	}
	if v.OptionDefaults != nil {
		v.OptionDefaults(&defaults)
	}
	t.Run("GetOptions/configured", func(t *testing.T) {
		got, err := groupByID(t, cp, workersID).GetOptions(defaults)
		if err != nil || got == nil {
			t.Fatalf("GetOptions(workers) = %v, %v", got, err)
		}
		want := defaults
		want.ScaleDownUtilizationThreshold = 0.4
		want.ScaleDownUnneededTime = 20 * time.Second
		want.MaxNodeProvisionTime = 5 * time.Minute
		want.IgnoreDaemonSetsUtilization = true
		if v.ExpectOptions != nil {
			v.ExpectOptions(t, defaults, *got, &want)
		}
		if *got != want {
			t.Errorf("GetOptions(workers)\n got  %+v\n want %+v", *got, want)
		}
	})
	t.Run("GetOptions/not-configured", func(t *testing.T) {
		// No options: UNIMPLEMENTED, which CA turns into ErrNotImplemented and then uses its
		// defaults (MaxNodeStartupTime included).
		for _, id := range []string{gpuID, batchID} {
			got, err := groupByID(t, cp, id).GetOptions(defaults)
			if !errors.Is(err, cloudprovider.ErrNotImplemented) {
				t.Errorf("GetOptions(%s) = %+v, %v; want ErrNotImplemented", id, got, err)
			}
		}
	})

	t.Run("Pricing", func(t *testing.T) {
		pm, perr := cp.Pricing()
		if perr != nil {
			t.Fatal(perr)
		}
		vms := s.SimVMs(t, "k8s-pool-a")
		start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
		end := start.Add(2 * time.Hour)
		price, err := pm.NodePrice(kubeNode(vms[0], "k8s-pool-a"), start, end)
		if err != nil {
			t.Fatalf("NodePrice(worker, 2h): %v", err)
		}
		if math.Abs(price-0.24) > 1e-9 {
			t.Errorf("NodePrice(worker, 2h) = %v, want 0.24 (0.12/h)", price)
		}
		// CA's price expander prices upcoming nodes from templates: the TemplateNodeInfo node,
		// sanitized by CA (new name, hostname label rewritten, no provider id). The server can
		// only tell the group from the template's labels.
		for _, tc := range []struct {
			id   string
			want float64 // < 0: ErrNotImplemented expected (no price configured)
		}{{workersID, 0.24}, {gpuID, -1}} {
			ni, err := groupByID(t, cp, tc.id).TemplateNodeInfo()
			if err != nil || ni == nil {
				t.Fatalf("TemplateNodeInfo(%s): %v", tc.id, err)
			}
			tn := sanitizedTemplateNode(ni.Node(), tc.id)
			price, err := pm.NodePrice(tn, start, end)
			switch {
			case tc.want < 0 && !errors.Is(err, cloudprovider.ErrNotImplemented):
				t.Errorf("NodePrice(template node of %s, no price configured) = %v, %v; want ErrNotImplemented", tc.id, price, err)
			case tc.want >= 0 && (err != nil || math.Abs(price-tc.want) > 1e-9):
				t.Errorf("NodePrice(template node of %s, 2h) = %v, %v; want %v", tc.id, price, err, tc.want)
			}
		}
		pod := &apiv1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
			Spec: apiv1.PodSpec{Containers: []apiv1.Container{{Name: "c", Image: "busybox",
				Resources: apiv1.ResourceRequirements{Requests: apiv1.ResourceList{apiv1.ResourceCPU: resource.MustParse("500m")}}}}}}
		pp, err := pm.PodPrice(pod, start, end)
		switch {
		case errors.Is(err, cloudprovider.ErrNotImplemented):
			t.Logf("PodPrice: ErrNotImplemented")
		case err != nil:
			t.Errorf("PodPrice: %v (want a price or ErrNotImplemented)", err)
		case pp < 0:
			t.Errorf("PodPrice = %v < 0", pp)
		default:
			t.Logf("PodPrice(500m cpu, 2h) = %v", pp)
		}
	})

	t.Run("GPU", func(t *testing.T) {
		if l := cp.GPULabel(); l != "cloudify.co/gpu-type" {
			t.Errorf("GPULabel = %q", l)
		}
		types := cp.GetAvailableGPUTypes()
		if _, ok := types["nvidia-t4"]; !ok || len(types) != 1 {
			t.Errorf("GetAvailableGPUTypes = %v, want {nvidia-t4}", types)
		}
		// GetNodeGpuConfig (CA's utils/gpu over GPULabel): a node carrying the GPU label and
		// nvidia.com/gpu capacity is a GPU node of that type; a plain worker is not.
		ni, err := groupByID(t, cp, gpuID).TemplateNodeInfo()
		if err != nil || ni == nil {
			t.Fatalf("TemplateNodeInfo(gpu-workers): %v", err)
		}
		gc := cp.GetNodeGpuConfig(ni.Node())
		if gc == nil || gc.Label != "cloudify.co/gpu-type" || gc.Type != "nvidia-t4" || v.GPUResourceName(gc) != "nvidia.com/gpu" {
			t.Errorf("GetNodeGpuConfig(gpu template) = %+v", gc)
		}
		vms := s.SimVMs(t, "k8s-pool-a")
		if gc := cp.GetNodeGpuConfig(kubeNode(vms[0], "k8s-pool-a")); gc != nil {
			t.Errorf("GetNodeGpuConfig(worker) = %+v, want nil", gc)
		}
	})

	t.Run("HasInstance", func(t *testing.T) {
		vms := s.SimVMs(t, "k8s-pool-a")
		ok, err := cp.HasInstance(kubeNode(vms[0], "k8s-pool-a"))
		t.Logf("HasInstance(worker) = %v, %v (the externalgrpc client implements it locally)", ok, err)
		if err != nil && !errors.Is(err, cloudprovider.ErrNotImplemented) {
			t.Errorf("HasInstance: %v", err)
		}
	})

	t.Run("RefreshWipesCaches", func(t *testing.T) {
		// CA's client caches NodeGroups and NodeGroupForNode answers until the next Refresh; the
		// server-side request counts show when it asked again.
		vm := s.SimVMs(t, "k8s-pool-a")[0]
		node := kubeNode(vm, "k8s-pool-a")
		if err := cp.Refresh(); err != nil {
			t.Fatal(err)
		}
		before := s.RPCCounts(t)
		for i := 0; i < 3; i++ {
			if g, err := cp.NodeGroupForNode(node); err != nil || g == nil || g.Id() != workersID {
				t.Fatalf("NodeGroupForNode = %v, %v", g, err)
			}
			if n := len(cp.NodeGroups()); n != 3 {
				t.Fatalf("NodeGroups = %d", n)
			}
		}
		mid := s.RPCCounts(t)
		if d := mid["NodeGroupForNode"] - before["NodeGroupForNode"]; d != 1 {
			t.Errorf("3 NodeGroupForNode calls between Refreshes reached the server %d times, want 1 (cached)", d)
		}
		if d := mid["NodeGroups"] - before["NodeGroups"]; d != 1 {
			t.Errorf("3 NodeGroups calls between Refreshes reached the server %d times, want 1 (cached)", d)
		}
		if err := cp.Refresh(); err != nil {
			t.Fatal(err)
		}
		if g, err := cp.NodeGroupForNode(node); err != nil || g == nil {
			t.Fatalf("NodeGroupForNode after Refresh = %v, %v", g, err)
		}
		cp.NodeGroups()
		after := s.RPCCounts(t)
		if d := after["NodeGroupForNode"] - mid["NodeGroupForNode"]; d != 1 {
			t.Errorf("NodeGroupForNode after Refresh reached the server %d times, want 1 (cache wiped)", d)
		}
		if d := after["NodeGroups"] - mid["NodeGroups"]; d != 1 {
			t.Errorf("NodeGroups after Refresh reached the server %d times, want 1 (cache wiped)", d)
		}
		if d := after["Refresh"] - mid["Refresh"]; d != 1 {
			t.Errorf("Refresh reached the server %d times, want 1", d)
		}
	})

	t.Run("Cleanup", func(t *testing.T) {
		if err := cp.Cleanup(); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		// Cleanup is CA's exit hook; the server must keep serving (a restarted CA reconnects).
		if err := cp.Refresh(); err != nil {
			t.Fatalf("Refresh after Cleanup: %v", err)
		}
		if n := len(cp.NodeGroups()); n != 3 {
			t.Errorf("NodeGroups after Cleanup = %d groups", n)
		}
	})

	t.Run("Coverage", func(t *testing.T) {
		// Counted by the server (its Prometheus metrics): CA's client made each of these calls.
		calls := s.RPCCounts(t)
		var missing []string
		var lines []string
		for _, m := range allRPCs {
			lines = append(lines, fmt.Sprintf("%s=%d", m, calls[m]))
			if calls[m] == 0 {
				missing = append(missing, m)
			}
		}
		t.Logf("RPC calls: %s", strings.Join(lines, " "))
		if len(missing) > 0 {
			t.Errorf("RPCs never called: %v", missing)
		}
	})
}

func checkWorkersTemplate(t *testing.T, n *apiv1.Node) {
	t.Helper()
	wantLabels := map[string]string{
		"node.kubernetes.io/instance-type": "m1.large",
		"topology.kubernetes.io/zone":      "zone-a",
		"kubernetes.io/os":                 "linux",
		"kubernetes.io/arch":               "amd64",
		"cloudify.co/deployment":           "k8s-pool-a",
		"cloudify.co/scaling-group":        "workers",
	}
	for k, v := range wantLabels {
		if n.Labels[k] != v {
			t.Errorf("template label %s = %q, want %q (labels: %v)", k, n.Labels[k], v, n.Labels)
		}
	}
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "dedicated" || n.Spec.Taints[0].Value != "batch" ||
		n.Spec.Taints[0].Effect != apiv1.TaintEffectNoSchedule {
		t.Errorf("template taints = %+v", n.Spec.Taints)
	}
	q := func(list apiv1.ResourceList, name string) resource.Quantity { return list[apiv1.ResourceName(name)] }
	for name, want := range map[string]string{"cpu": "3800m", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"} {
		got := q(n.Status.Allocatable, name)
		if got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("allocatable %s = %s, want %s", name, got.String(), want)
		}
	}
	for name, want := range map[string]string{"cpu": "4", "memory": "16Gi", "pods": "110"} {
		got := q(n.Status.Capacity, name)
		if got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("capacity %s = %s, want %s", name, got.String(), want)
		}
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == apiv1.NodeReady && c.Status == apiv1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		t.Errorf("template has no Ready=True condition: %+v", n.Status.Conditions)
	}
}

// sanitizedTemplateNode mimics what CA does to a template before using it for a scale-up
// simulation (simulator/node_info_utils.go): a fresh name, hostname label set to it, marker label.
func sanitizedTemplateNode(n *apiv1.Node, groupID string) *apiv1.Node {
	c := n.DeepCopy()
	c.Name = fmt.Sprintf("template-node-for-%s-%d", groupID, 5577006791947779410)
	c.UID = ""
	if c.Labels == nil {
		c.Labels = map[string]string{}
	}
	c.Labels["kubernetes.io/hostname"] = c.Name
	c.Labels["cluster-autoscaler.kubernetes.io/template-node"] = "true"
	c.Spec.ProviderID = ""
	return c
}
