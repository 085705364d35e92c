package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// joinedLabel marks the Nodes the joiner owns; the joiner never touches other Nodes.
const joinedLabel = "e2e.autoscaler-cloudify/joined"

// kwokAnnotation hands a Node to kwok, which then plays its kubelet (reports Ready, runs pods).
const kwokAnnotation = "kwok.x-k8s.io/node"

// taintNotReady is the taint a Node carries while it is not Ready.
const taintNotReady = "node.kubernetes.io/not-ready"

// groupTemplate is the node template of one group, read from the provider's own config file
// (contract 2), so the Nodes that "join" look exactly like the template the provider gives CA.
type groupTemplate struct {
	Labels      map[string]string `json:"labels"`
	Taints      []corev1.Taint    `json:"taints"`
	Capacity    map[string]string `json:"capacity"`
	Allocatable map[string]string `json:"allocatable"`
}

type providerConfig struct {
	Cloudify []struct {
		Name     string `json:"name"`
		URL      string `json:"url"`
		Tenant   string `json:"tenant"`
		Username string `json:"username"`
	} `json:"cloudify"`
	NodeGroups struct {
		Groups map[string]struct {
			Template groupTemplate `json:"template"`
		} `json:"groups"`
	} `json:"node_groups"`
}

func loadProviderConfig(path string) (*providerConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c providerConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(c.Cloudify) == 0 {
		return nil, fmt.Errorf("%s: no cloudify entry", path)
	}
	return &c, nil
}

// Joiner plays the kubelets of the Cloudify VMs: when a VM instance of a scaling group reaches
// `started`, it registers a kwok-managed Node with the provider id the example blueprint's kubelet
// would use; when the instance leaves `started` or disappears (the blueprint's uninstall), it deletes
// the Node, and the pods bound to it, as the node lifecycle and pod GC controllers would.
type Joiner struct {
	kube     kubernetes.Interface
	cfy      *cloudifyClient
	groups   map[string]groupTemplate
	tl       *Timeline
	interval time.Duration

	// external: register Nodes as kubelet --cloud-provider=external does (uninitialized taint, no
	// providerID, no pool labels: the provider's node controller adds them) and, when the VM is
	// gone, stop "the kubelet" (Node NotReady) instead of deleting the Node: the node controller
	// deletes it. See nodelife.go.
	external bool
	life     *nodeLife     // initialization/deletion timings (external mode)
	refresh  time.Duration // the provider's refresh interval (external mode)
	minAge   time.Duration // the provider's node_controller.min_node_age (external mode)

	mu        sync.Mutex
	instances map[string]nodeInstance // last seen VM instances by id
	seen      map[string]string       // instance id -> last state logged
	lastErr   error
	names     map[string]string    // node name -> provider id, kept after the Node is deleted
	joinedAt  map[string]time.Time // node name -> when the joiner created it (external mode)
	removed   []removedVM          // VM instances seen to disappear, in order
	stopped   map[string]bool      // node name -> its "kubelet" was stopped (external mode)
	// bootDelay: per group id, how long a Node stays NotReady after it registers (a kubelet that
	// registers before its network is up). kwok only manages the Node once the delay is over.
	bootDelay map[string]time.Duration
}

// providerIDOf returns the provider id of a Node the joiner created (also after its deletion).
func (j *Joiner) providerIDOf(name string) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.names[name]
}

func providerID(tenant string, ni nodeInstance) string {
	return fmt.Sprintf("cloudify://%s/%s/%s", tenant, ni.DeploymentID, ni.ID)
}

func groupID(ni nodeInstance) string {
	return ni.DeploymentID + "/" + ni.ScalingGroups[0].Name
}

func (j *Joiner) Run(ctx context.Context) {
	t := time.NewTicker(j.interval)
	defer t.Stop()
	for {
		if err := j.syncOnce(ctx); err != nil {
			j.mu.Lock()
			if j.lastErr == nil || j.lastErr.Error() != err.Error() {
				fmt.Fprintf(os.Stderr, "joiner: %v\n", err)
			}
			j.lastErr = err
			j.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// VMs returns the VM instances last seen, by id.
func (j *Joiner) VMs() map[string]nodeInstance {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make(map[string]nodeInstance, len(j.instances))
	for k, v := range j.instances {
		out[k] = v
	}
	return out
}

func (j *Joiner) syncOnce(ctx context.Context) error {
	all, err := j.cfy.nodeInstances(ctx)
	if err != nil {
		return err
	}
	vms := map[string]nodeInstance{}
	want := map[string]nodeInstance{} // provider id -> started VM instance
	for _, ni := range all {
		if !isVM(ni) {
			continue
		}
		vms[ni.ID] = ni
		if ni.State == "started" && hostname(ni) != "" {
			want[j.keyOf(ni)] = ni
		}
	}
	j.mu.Lock()
	for id, ni := range vms {
		if j.seen[id] != ni.State {
			j.seen[id] = ni.State
			if j.tl != nil && (ni.State == "uninitialized" || ni.State == "started" || ni.State == "deleted") {
				j.tl.Event("cloudify: instance %s (%s) is %s", id, groupID(ni), ni.State)
			}
		}
	}
	for id := range j.seen {
		if _, ok := vms[id]; !ok && j.seen[id] != "gone" {
			j.seen[id] = "gone"
			if ni, ok := j.instances[id]; ok {
				j.removed = append(j.removed, removedVM{ni, time.Now()})
			}
			if j.tl != nil {
				j.tl.Event("cloudify: instance %s removed", id)
			}
		}
	}
	j.instances = vms
	j.mu.Unlock()

	nodes, err := j.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: joinedLabel + "=true"})
	if err != nil {
		return err
	}
	have := map[string]corev1.Node{}
	for _, n := range nodes.Items {
		if j.external {
			have[n.Name] = n
		} else {
			have[n.Spec.ProviderID] = n
		}
	}
	// Deterministic order keeps the timeline readable.
	pids := make([]string, 0, len(want))
	for pid := range want {
		pids = append(pids, pid)
	}
	sort.Strings(pids)
	for _, pid := range pids {
		if _, ok := have[pid]; ok {
			continue
		}
		ni := want[pid]
		node, err := j.nodeFor(ni, providerID(j.cfy.tenant, ni))
		if err != nil {
			return err
		}
		if _, err := j.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create node %s: %w", node.Name, err)
		}
		j.mu.Lock()
		j.names[node.Name] = providerID(j.cfy.tenant, ni)
		j.joinedAt[node.Name] = time.Now()
		j.mu.Unlock()
		if j.tl != nil {
			if j.external {
				j.tl.Event("joiner: node %s registered like kubelet --cloud-provider=external (uninitialized taint, no providerID)", node.Name)
			} else {
				j.tl.Event("joiner: node %s joined (providerID %s)", node.Name, pid)
			}
		}
	}
	if err := j.bootNodes(ctx, have); err != nil {
		return err
	}
	if j.external {
		return j.syncExternal(ctx, want, have)
	}
	j.mu.Lock()
	for pid, n := range have {
		j.names[n.Name] = pid
	}
	j.mu.Unlock()
	for pid, n := range have {
		if _, ok := want[pid]; ok {
			continue
		}
		if err := j.kube.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete node %s: %w", n.Name, err)
		}
		// No pod GC runs here (no kube-controller-manager): remove what was bound to the node.
		pods, err := j.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
		if err == nil {
			zero := int64(0)
			for _, p := range pods.Items {
				_ = j.kube.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			}
		}
		if j.tl != nil {
			j.tl.Event("joiner: node %s deleted (instance gone from Cloudify)", n.Name)
		}
	}
	return nil
}

func (j *Joiner) nodeFor(ni nodeInstance, pid string) (*corev1.Node, error) {
	gid := groupID(ni)
	tmpl, ok := j.groups[gid]
	if !ok {
		return nil, fmt.Errorf("no template for group %s in the provider config", gid)
	}
	name := strings.ToLower(hostname(ni))
	labels := joinLabels(name, ni)
	for k, v := range tmpl.Labels {
		labels[k] = v
	}
	capacity := corev1.ResourceList{}
	for k, v := range tmpl.Capacity {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("group %s capacity %s: %w", gid, k, err)
		}
		capacity[corev1.ResourceName(k)] = q
	}
	alloc := capacity.DeepCopy()
	for k, v := range tmpl.Allocatable {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("group %s allocatable %s: %w", gid, k, err)
		}
		alloc[corev1.ResourceName(k)] = q
	}
	ip, _ := ni.RuntimeProperties["ip"].(string)
	booted := j.bootDelay[gid] <= 0
	if j.external {
		return externalNode(name, ni, capacity, alloc, booted), nil
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: labels,
			Annotations: map[string]string{
				"node.alpha.kubernetes.io/ttl":  "0",
				"e2e.autoscaler-cloudify/vm-ip": ip,
			},
		},
		Spec: corev1.NodeSpec{ProviderID: pid, Taints: tmpl.Taints},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: alloc,
			// Ready=True is left to kwok's node-initialize stage, as a kubelet would report it.
		},
	}
	if booted {
		node.Annotations[kwokAnnotation] = "fake"
	} else {
		// A kubelet that registers NotReady carries this taint until it is Ready, so nothing is
		// scheduled onto the booting node.
		node.Spec.Taints = append(append([]corev1.Taint{}, tmpl.Taints...), corev1.Taint{Key: taintNotReady, Effect: corev1.TaintEffectNoSchedule})
	}
	return node, nil
}

// bootNodes hands Nodes whose boot delay is over to kwok (which then reports them Ready) and
// drops their not-ready taint, as the node lifecycle controller would.
func (j *Joiner) bootNodes(ctx context.Context, have map[string]corev1.Node) error {
	for _, n := range have {
		// Only Nodes registered booting (the not-ready taint): a Node whose kubelet the joiner
		// stopped (VM gone, outage phase) also lacks the kwok annotation and must stay NotReady.
		booting := false
		for _, t := range n.Spec.Taints {
			booting = booting || t.Key == taintNotReady
		}
		if booting && n.Annotations[kwokAnnotation] == "" && time.Since(n.CreationTimestamp.Time) >= j.bootDelay[n.Labels["cloudify.co/deployment"]+"/"+n.Labels["cloudify.co/scaling-group"]] {
			// Booted: kwok takes over (reports Ready) and the not-ready taint goes, as the node
			// lifecycle controller would remove it.
			var keep []corev1.Taint
			for _, t := range n.Spec.Taints {
				if t.Key != taintNotReady {
					keep = append(keep, t)
				}
			}
			// The resourceVersion makes the patch fail on a Node that changed since it was read
			// (the node controller removing its taint meanwhile); the next sync tries again.
			patch, err := json.Marshal(map[string]any{
				"metadata": map[string]any{"annotations": map[string]string{kwokAnnotation: "fake"}, "resourceVersion": n.ResourceVersion},
				"spec":     map[string]any{"taints": keep},
			})
			if err != nil {
				return err
			}
			if _, err := j.kube.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				if apierrors.IsConflict(err) {
					continue
				}
				return fmt.Errorf("boot node %s: %w", n.Name, err)
			}
			if j.tl != nil {
				j.tl.Event("joiner: node %s finished booting after %.0fs (kubelet ready to report)", n.Name, time.Since(n.CreationTimestamp.Time).Seconds())
			}
		}
	}
	return nil
}

// joinLabels are the labels a joining VM's kubelet registers its Node with (its --node-labels):
// the well-known ones, the instance's deployment and scaling group, and the joiner's mark.
func joinLabels(name string, ni nodeInstance) map[string]string {
	return map[string]string{
		"kubernetes.io/os":          "linux",
		"kubernetes.io/arch":        "amd64",
		"kubernetes.io/hostname":    name,
		"cloudify.co/deployment":    ni.DeploymentID,
		"cloudify.co/scaling-group": ni.ScalingGroups[0].Name,
		"type":                      "kwok",
		joinedLabel:                 "true",
	}
}
