package conformance

// CA 1.34.1 client semantics (internal/caclient): the pre-1.35 wire (template Node embedded in
// field 1, options durations as k8s meta.v1.Duration in 3/4/5, pricing times as meta.v1.Time in
// 2/3, pod embedded in field 1) against the real autoscaler-cloudify binary. This is what proves
// the server's compatibility fields. See ../ca-conformance/README.md.

import (
	"errors"
	"fmt"
	"log"
	"math"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	apiv1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ca "autoscaler-cloudify/tests/ca-conformance-134/internal/caclient"
	"autoscaler-cloudify/tests/ca-harness"
)

const (
	workersID = "k8s-pool-a/workers"
	gpuID     = "k8s-pool-b/gpu-workers"
	batchID   = "k8s-pool-c/batch"
	tenant    = "default_tenant"
)

func TestMain(m *testing.M) {
	if os.Getenv("CA_CONFORMANCE_RPCLOG") == "1" {
		ca.Logger = log.New(os.Stderr, "caclient: ", log.Lmicroseconds)
	}
	os.Exit(m.Run())
}

func startPlain(t *testing.T) (*harness.Stack, *ca.ExternalGrpcCloudProvider) {
	t.Helper()
	s := harness.StartStack(t, "testdata/scenario.yaml", harness.ServeOptions{ConfigTemplate: "testdata/provider.yaml"})
	// CA's default deadline (5 s) for every call, mutations included.
	cc := s.CloudConfig(t, fmt.Sprintf("address: %q\ngrpc_timeout: 5s\n", s.GRPCAddr))
	p, err := ca.BuildFromCloudConfigFile(cc)
	if err != nil {
		t.Fatalf("build externalgrpc provider: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return s, p
}

func providerID(deployment, vm string) string {
	return fmt.Sprintf("cloudify://%s/%s/%s", tenant, deployment, vm)
}

func groupByID(t *testing.T, p ca.CloudProvider, id string) ca.NodeGroup {
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

func describe(insts []ca.Instance) string {
	var parts []string
	for _, i := range insts {
		st := "nil"
		if i.Status != nil {
			st = i.Status.State.String()
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

func mustTarget(t *testing.T, g ca.NodeGroup) int {
	t.Helper()
	n, err := g.TargetSize()
	if err != nil {
		t.Fatalf("TargetSize(%s): %v", g.Id(), err)
	}
	return n
}

// waitSettled refreshes like CA's loop until Nodes() has `want` instances, all Running, and
// every id equals the provider id the simulator's VMs imply.
func waitSettled(t *testing.T, s *harness.Stack, p ca.CloudProvider, id, deployment string, want int) []ca.Instance {
	t.Helper()
	var insts []ca.Instance
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
			if i.Status == nil || i.Status.State != ca.InstanceRunning || i.Status.ErrorInfo != nil {
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

func TestLegacyClient134(t *testing.T) {
	s, p := startPlain(t)
	var cp ca.CloudProvider = p
	if err := cp.Refresh(); err != nil {
		t.Fatalf("Refresh: %v", err)
	}

	t.Run("NodeGroups", func(t *testing.T) {
		want := map[string][2]int{workersID: {1, 10}, gpuID: {0, 4}, batchID: {0, 3}}
		got := map[string][2]int{}
		for _, g := range cp.NodeGroups() {
			got[g.Id()] = [2]int{g.MinSize(), g.MaxSize()}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("NodeGroups = %v, want %v", got, want)
		}
	})

	t.Run("NodesAndNodeGroupForNode", func(t *testing.T) {
		waitSettled(t, s, cp, workersID, "k8s-pool-a", 2)
		vm := s.SimVMs(t, "k8s-pool-a")[0]
		g, err := cp.NodeGroupForNode(kubeNode(vm, "k8s-pool-a"))
		if err != nil || g == nil || g.Id() != workersID {
			t.Fatalf("NodeGroupForNode = %v, %v", g, err)
		}
		if n := mustTarget(t, g); n != 2 {
			t.Errorf("TargetSize = %d, want 2", n)
		}
	})

	t.Run("TemplateNodeInfo/field1", func(t *testing.T) {
		ni, err := groupByID(t, cp, workersID).TemplateNodeInfo()
		if err != nil || ni == nil || ni.Node() == nil {
			t.Fatalf("TemplateNodeInfo(workers) via nodeInfo=1 = %v, %v (a nil NodeInfo crashes CA <= 1.34.1's core)", ni, err)
		}
		checkWorkersTemplate(t, ni.Node())
		ni, err = groupByID(t, cp, gpuID).TemplateNodeInfo()
		if err != nil || ni == nil || ni.Node().Labels["cloudify.co/gpu-type"] != "nvidia-t4" {
			t.Errorf("TemplateNodeInfo(gpu-workers) = %v, %v", ni, err)
		}
		if ni, err := groupByID(t, cp, batchID).TemplateNodeInfo(); !errors.Is(err, ca.ErrNotImplemented) {
			t.Errorf("TemplateNodeInfo(batch) = %v, %v; want ErrNotImplemented", ni, err)
		}
	})

	t.Run("GetOptions/fields3-5", func(t *testing.T) {
		// Defaults reach the server only in 3/4/5 (1.34.1 sends no 8/9/10): the echoed values
		// prove the server reads the legacy request fields too.
		defaults := ca.NodeGroupAutoscalingOptions{
			ScaleDownUtilizationThreshold:    0.5,
			ScaleDownGpuUtilizationThreshold: 0.55,
			ScaleDownUnneededTime:            10 * time.Minute,
			ScaleDownUnreadyTime:             21 * time.Minute,
			MaxNodeProvisionTime:             15 * time.Minute,
			ZeroOrMaxNodeScaling:             true,
		}
		got, err := groupByID(t, cp, workersID).GetOptions(defaults)
		if err != nil || got == nil {
			t.Fatalf("GetOptions(workers) = %v, %v", got, err)
		}
		want := defaults
		want.ScaleDownUtilizationThreshold = 0.4
		want.ScaleDownUnneededTime = 20 * time.Second
		want.MaxNodeProvisionTime = 5 * time.Minute
		want.IgnoreDaemonSetsUtilization = true
		if *got != want {
			t.Errorf("GetOptions(workers)\n got  %+v\n want %+v", *got, want)
		}
		if got, err := groupByID(t, cp, gpuID).GetOptions(defaults); !errors.Is(err, ca.ErrNotImplemented) {
			t.Errorf("GetOptions(gpu-workers) = %+v, %v; want ErrNotImplemented", got, err)
		}
	})

	t.Run("Pricing/legacy-times", func(t *testing.T) {
		pm, _ := cp.Pricing()
		start := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
		end := start.Add(2 * time.Hour)
		vm := s.SimVMs(t, "k8s-pool-a")[0]
		price, err := pm.NodePrice(kubeNode(vm, "k8s-pool-a"), start, end)
		if err != nil || math.Abs(price-0.24) > 1e-9 {
			t.Errorf("NodePrice(worker, 2h in meta.v1.Time fields 2/3) = %v, %v; want 0.24", price, err)
		}
		pod := &apiv1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
			Spec: apiv1.PodSpec{Containers: []apiv1.Container{{Name: "c", Image: "busybox",
				Resources: apiv1.ResourceRequirements{Requests: apiv1.ResourceList{apiv1.ResourceCPU: resource.MustParse("500m")}}}}}}
		pp, err := pm.PodPrice(pod, start, end)
		if err != nil && !errors.Is(err, ca.ErrNotImplemented) {
			t.Errorf("PodPrice(pod in field 1) = %v, %v; want a price or ErrNotImplemented", pp, err)
		}
		t.Logf("PodPrice: %v %v", pp, err)
	})

	t.Run("GPU", func(t *testing.T) {
		if l := cp.GPULabel(); l != "cloudify.co/gpu-type" {
			t.Errorf("GPULabel = %q", l)
		}
		if types := cp.GetAvailableGPUTypes(); len(types) != 1 {
			t.Errorf("GetAvailableGPUTypes = %v", types)
		}
	})
	t.Logf("RPC calls: %v", p.Calls.Snapshot())
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
