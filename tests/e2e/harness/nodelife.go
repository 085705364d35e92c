package main

// Node lifecycle (issue 15): the joiner registers Nodes the way kubelet --cloud-provider=external
// does, the provider's node controller initializes them from its inventory snapshot, and deletes a
// Node whose VM is gone. This file holds the joiner's external mode, the initialization-latency
// tracker and the two phases: an out-of-band scale-in (run on the simulator, not through CA) and a
// 60 s manager outage.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

const uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"

// controllerTiming reads refresh.interval and node_controller.min_node_age from the provider
// config (defaults as the provider's: 10s and 2m).
func controllerTiming(path string) (refresh, minAge time.Duration) {
	var c struct {
		Refresh struct {
			Interval string `json:"interval"`
		} `json:"refresh"`
		NodeController struct {
			MinNodeAge string `json:"min_node_age"`
		} `json:"node_controller"`
	}
	refresh, minAge = 10*time.Second, 2*time.Minute
	data, err := os.ReadFile(path)
	if err == nil && yaml.Unmarshal(data, &c) == nil {
		if d, err := time.ParseDuration(c.Refresh.Interval); err == nil {
			refresh = d
		}
		if d, err := time.ParseDuration(c.NodeController.MinNodeAge); err == nil {
			minAge = d
		}
	}
	return refresh, minAge
}

// removedVM is a VM instance the joiner saw disappear, and when.
type removedVM struct {
	ni nodeInstance
	at time.Time
}

// removedSince returns the VM instances that disappeared after t, by id. scale-down uses it so that
// a Node that joined during the phase and was removed again counts too (CA can add one while new
// Nodes still carry the uninitialized taint, see README "Node lifecycle").
func (j *Joiner) removedSince(t time.Time) map[string]nodeInstance {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := map[string]nodeInstance{}
	for _, r := range j.removed {
		if r.at.After(t) {
			out[r.ni.ID] = r.ni
		}
	}
	return out
}

// keyOf is how the joiner matches a VM to its Node: by provider id, or in external mode by node
// name (the Node has no provider id until the node controller sets it).
func (j *Joiner) keyOf(ni nodeInstance) string {
	if j.external {
		return nodeNameOf(ni)
	}
	return providerID(j.cfy.tenant, ni)
}

func nodeNameOf(ni nodeInstance) string {
	n := hostname(ni)
	out := make([]rune, 0, len(n))
	for _, r := range n {
		if r >= 'A' && r <= 'Z' {
			r += 'a' - 'A'
		}
		out = append(out, r)
	}
	return string(out)
}

// externalNode is the Node kubelet --cloud-provider=external creates: its own default labels, the
// uninitialized taint, no providerID, no addresses (kubelet 1.29+ waits for the cloud provider).
func externalNode(name string, ni nodeInstance, capacity, alloc corev1.ResourceList, booted bool) *corev1.Node {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			// What kubelet's --node-labels would carry; the joiner's boot delay is per group.
			Labels:      joinLabels(name, ni),
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0"},
		},
		Spec:   corev1.NodeSpec{Taints: []corev1.Taint{{Key: uninitializedTaint, Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: alloc},
	}
	if booted {
		node.Annotations[kwokAnnotation] = "fake"
	} else {
		node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: taintNotReady, Effect: corev1.TaintEffectNoSchedule})
	}
	return node
}

// syncExternal: a Node whose VM is gone loses its "kubelet" (kwok stops managing it and the Node
// turns Ready=Unknown, as kube-controller-manager marks it after its grace period); the node
// controller is the one that deletes it. Pods bound to a deleted Node are removed (pod GC).
func (j *Joiner) syncExternal(ctx context.Context, want map[string]nodeInstance, have map[string]corev1.Node) error {
	for name, n := range have {
		if _, ok := want[name]; ok {
			continue
		}
		j.mu.Lock()
		done := j.stopped[name]
		j.mu.Unlock()
		if done {
			continue
		}
		if err := stopKubelet(ctx, j.kube, n.Name); err != nil {
			return err
		}
		j.mu.Lock()
		j.stopped[name] = true
		j.mu.Unlock()
		if j.tl != nil {
			j.tl.Event("joiner: VM of node %s gone; its kubelet stopped (Node Ready=Unknown), left for the node controller", name)
		}
	}
	j.mu.Lock()
	var vanished []string
	for name := range j.joinedAt {
		if _, ok := have[name]; !ok && j.stopped[name] {
			vanished = append(vanished, name)
		}
	}
	for _, name := range vanished {
		delete(j.joinedAt, name)
		delete(j.stopped, name)
	}
	j.mu.Unlock()
	for _, name := range vanished {
		pods, err := j.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + name})
		if err == nil {
			zero := int64(0)
			for _, p := range pods.Items {
				_ = j.kube.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			}
		}
	}
	return nil
}

// stopKubelet takes a Node away from kwok and reports it Ready=Unknown.
func stopKubelet(ctx context.Context, kube kubernetes.Interface, name string) error {
	n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	delete(n.Annotations, kwokAnnotation)
	if n, err = kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		return err
	}
	now := metav1.Now()
	var conds []corev1.NodeCondition
	for _, c := range n.Status.Conditions {
		if c.Type != corev1.NodeReady {
			conds = append(conds, c)
		}
	}
	n.Status.Conditions = append(conds, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionUnknown,
		Reason: "NodeStatusUnknown", Message: "Kubelet stopped posting node status.", LastHeartbeatTime: now, LastTransitionTime: now})
	_, err = kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// restartKubelet gives a Node back to kwok, which reports it Ready again.
func restartKubelet(ctx context.Context, kube kubernetes.Interface, name string) error {
	n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[kwokAnnotation] = "fake"
	_, err = kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	return err
}

// nodeLife watches Nodes (a real watch, for timing) and records when each joined Node lost the
// uninitialized taint and when it was deleted.
type nodeLife struct {
	j  *Joiner
	tl *Timeline

	mu          sync.Mutex
	initialized map[string]time.Duration // node name -> registration to taint removal
	deletedAt   map[string]time.Time
}

func newNodeLife(j *Joiner, tl *Timeline) *nodeLife {
	return &nodeLife{j: j, tl: tl, initialized: map[string]time.Duration{}, deletedAt: map[string]time.Time{}}
}

func (l *nodeLife) run(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := l.j.kube.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{LabelSelector: joinedLabel + "=true"})
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok {
				continue
			}
			now := time.Now()
			l.mu.Lock()
			switch ev.Type {
			case watch.Deleted:
				l.deletedAt[n.Name] = now
			case watch.Added, watch.Modified:
				l.j.mu.Lock()
				joined, known := l.j.joinedAt[n.Name]
				l.j.mu.Unlock()
				if _, done := l.initialized[n.Name]; known && !done && !hasTaint(*n, uninitializedTaint) && n.Spec.ProviderID != "" {
					d := now.Sub(joined)
					l.initialized[n.Name] = d
					l.tl.Event("node controller: node %s initialized %.0f ms after registration (providerID %s, zone/instance-type labels %q/%q, %d addresses)",
						n.Name, float64(d.Microseconds())/1000, n.Spec.ProviderID, n.Labels["topology.kubernetes.io/zone"],
						n.Labels["node.kubernetes.io/instance-type"], len(n.Status.Addresses))
				}
			}
			l.mu.Unlock()
		}
		w.Stop()
	}
}

// summary: initialization latencies seen so far (count, median, max).
func (l *nodeLife) summary() (int, time.Duration, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []time.Duration
	for _, d := range l.initialized {
		ds = append(ds, d)
	}
	if len(ds) == 0 {
		return 0, 0, 0
	}
	sort.Slice(ds, func(a, b int) bool { return ds[a] < ds[b] })
	return len(ds), ds[len(ds)/2], ds[len(ds)-1]
}

func (l *nodeLife) deleted(name string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.deletedAt[name]
	return t, ok
}

// outOfBandScaleIn: the operator scales the pool out and back in directly on Cloudify (not through
// CA). The new Node is initialized by the node controller; after the scale-in its VM is gone and
// the controller must delete the Node within two refresh intervals of it turning NotReady.
func (s *scenario) outOfBandScaleIn(ctx context.Context) error {
	s.tl.Phase("11 out-of-band scale-in (node controller)")
	if s.joiner.life == nil {
		return stepErr{"the joiner does not run in external mode (--join-mode=external)"}
	}
	dep, grp := split(s.pool)
	before := map[string]bool{}
	nodes, err := groupNodes(ctx, s.kube, s.pool)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		before[n.Name] = true
	}
	ex, err := s.cfy.scale(ctx, dep, grp, 1, nil)
	if err != nil {
		return err
	}
	s.tl.Event("harness: operator scale +1 on %s directly on Cloudify (execution %s)", s.pool, shortID(ex.ID))
	var added corev1.Node
	if err := s.waitFor(ctx, 60*time.Second, "a new Node of "+s.pool+" initialized by the node controller", func() (bool, error) {
		nodes, err := groupNodes(ctx, s.kube, s.pool)
		if err != nil {
			return false, err
		}
		for _, n := range nodes {
			if !before[n.Name] && n.Spec.ProviderID != "" && !hasTaint(n, uninitializedTaint) {
				added = n
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	vm := added.Spec.ProviderID[len(fmt.Sprintf("cloudify://%s/%s/", s.cfy.tenant, dep)):]
	// The Node lives past node_controller.min_node_age first, so that the timing below measures
	// the snapshot rule (two complete refreshes), not the grace period.
	if err := s.waitFor(ctx, 30*time.Second+s.joiner.minAge, "scale-out finished and Node older than min_node_age", func() (bool, error) {
		s.joiner.mu.Lock()
		joined := s.joiner.joinedAt[added.Name]
		s.joiner.mu.Unlock()
		return !s.running(dep) && time.Since(joined) > s.joiner.minAge+time.Second, nil
	}); err != nil {
		return err
	}
	mark := s.w.execCount()
	ex, err = s.cfy.scale(ctx, dep, grp, -1, []string{vm})
	if err != nil {
		return err
	}
	s.tl.Event("harness: operator scale -1 include_instances [%s] directly on Cloudify (execution %s)", vm, shortID(ex.ID))
	var goneAt time.Time
	if err := s.waitFor(ctx, 30*time.Second, "instance "+vm+" gone from Cloudify", func() (bool, error) {
		if _, ok := s.joiner.VMs()[vm]; !ok {
			goneAt = time.Now()
			return true, nil
		}
		return false, nil
	}); err != nil {
		return err
	}
	if _, err := s.waitExecution(ctx, mark, dep, false, 60*time.Second, "operator scale-in"); err != nil {
		return err
	}
	var notReadyAt time.Time
	if err := s.waitFor(ctx, 30*time.Second, "Node "+added.Name+" NotReady after its VM is gone", func() (bool, error) {
		n, err := s.kube.CoreV1().Nodes().Get(ctx, added.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, stepErr{"Node deleted before it was seen NotReady"}
		}
		if err != nil {
			return false, err
		}
		if !nodeReady(*n) {
			notReadyAt = time.Now()
			return true, nil
		}
		return false, nil
	}); err != nil {
		return err
	}
	interval := s.joiner.refresh
	limit := time.Duration(float64(2*interval)*s.slow) + time.Second
	if err := s.waitFor(ctx, limit+5*time.Second, "node controller deletes Node "+added.Name, func() (bool, error) {
		_, ok := s.joiner.life.deleted(added.Name)
		return ok, nil
	}); err != nil {
		return err
	}
	at, _ := s.joiner.life.deleted(added.Name)
	took := at.Sub(notReadyAt)
	s.tl.Event("node controller: Node %s deleted %.1fs after its instance left Cloudify, %.1fs after it went NotReady (refresh interval %v)",
		added.Name, at.Sub(goneAt).Seconds(), took.Seconds(), interval)
	if took > limit {
		msg := fmt.Sprintf("Node %s deleted after %.1fs, more than two refresh intervals (%v, limit %v)", added.Name, took.Seconds(), interval, limit)
		s.tl.Event("FAIL: %s", msg)
		return stepErr{msg}
	}
	return s.groupAt(ctx, s.pool, s.poolMin, 60*time.Second)
}

// nodeControllerOutage: Cloudify answers 503 for 60 s while the pool's Nodes are NotReady (as in a
// network partition); the node controller must delete nothing, during the outage or after it.
func (s *scenario) nodeControllerOutage(ctx context.Context) error {
	s.tl.Phase("12 60 s manager outage with NotReady Nodes (node controller)")
	if s.joiner.life == nil {
		return stepErr{"the joiner does not run in external mode (--join-mode=external)"}
	}
	nodes, err := groupNodes(ctx, s.kube, s.pool)
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		return stepErr{"no Node in " + s.pool}
	}
	all, err := s.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: joinedLabel + "=true"})
	if err != nil {
		return err
	}
	if err := s.cfy.faults(ctx, map[string]any{"down": true}); err != nil {
		return err
	}
	start := time.Now()
	s.tl.Event("harness: simulator down (503 maintenance_mode_active) for 60s; %d joined Nodes", len(all.Items))
	for _, n := range nodes {
		if err := stopKubelet(ctx, s.kube, n.Name); err != nil {
			_ = s.cfy.faults(ctx, map[string]any{"down": false})
			return err
		}
	}
	s.tl.Event("harness: the %d Node(s) of %s made NotReady during the outage", len(nodes), s.pool)
	check := func() error {
		for _, n := range all.Items {
			if _, gone := s.joiner.life.deleted(n.Name); gone {
				return stepErr{fmt.Sprintf("Node %s was deleted during/after the outage", n.Name)}
			}
		}
		return nil
	}
	for time.Since(start) < 60*time.Second {
		if err := check(); err != nil {
			_ = s.cfy.faults(ctx, map[string]any{"down": false})
			s.tl.Event("FAIL: %v", err)
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err := s.cfy.faults(ctx, map[string]any{"down": false}); err != nil {
		return err
	}
	s.tl.Event("harness: simulator back after %.0fs", time.Since(start).Seconds())
	// Complete snapshots come back: the instances exist, so still nothing may be deleted.
	settle := time.Now().Add(time.Duration(float64(3*s.joiner.refresh)*s.slow) + 2*time.Second)
	for time.Now().Before(settle) {
		if err := check(); err != nil {
			s.tl.Event("FAIL: %v", err)
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, n := range nodes {
		if err := restartKubelet(ctx, s.kube, n.Name); err != nil {
			return err
		}
	}
	s.tl.Event("no Node deleted during the 60s outage nor in 3 refresh intervals after it; kubelets restarted")
	if err := s.groupAt(ctx, s.pool, s.poolMin, 60*time.Second); err != nil {
		return err
	}
	if n, med, max := s.joiner.life.summary(); n > 0 {
		s.tl.Event("node controller: %d Nodes initialized over the run; registration to taint removal median %.0f ms, max %.0f ms",
			n, float64(med.Microseconds())/1000, float64(max.Microseconds())/1000)
	}
	return nil
}
