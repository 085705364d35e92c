package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const ns = "default"

// workload is a ReplicaSet plus the pods it owns. There is no kube-controller-manager in this
// control plane, so the harness plays the ReplicaSet controller: the ReplicaSet object exists (CA's
// drain rules look it up) and the harness creates and deletes the pods.
type workload struct {
	name     string
	replicas int
	cpu      string
	memory   string
	selector map[string]string // nodeSelector
}

func podsOf(ctx context.Context, kube kubernetes.Interface, app string) ([]corev1.Pod, error) {
	l, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func createWorkload(ctx context.Context, kube kubernetes.Interface, w workload) error {
	labels := map[string]string{"app": w.name}
	grace := int64(1)
	spec := corev1.PodSpec{
		NodeSelector:                  w.selector,
		TerminationGracePeriodSeconds: &grace,
		Containers: []corev1.Container{{
			Name:  "app",
			Image: "registry.invalid/e2e/pause:1", // never pulled: kwok plays the kubelet
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse(w.cpu),
				corev1.ResourceMemory: resource.MustParse(w.memory),
			}},
		}},
	}
	replicas := int32(w.replicas)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: w.name, Namespace: ns, Labels: labels},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	created, err := kube.AppsV1().ReplicaSets(ns).Create(ctx, rs, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create replicaset %s: %w", w.name, err)
	}
	yes := true
	owner := []metav1.OwnerReference{{
		APIVersion: "apps/v1", Kind: "ReplicaSet", Name: created.Name, UID: created.UID,
		Controller: &yes, BlockOwnerDeletion: &yes,
	}}
	// Tracked at 0 while the first pods are created, so the controller loop does not add more.
	replicaSets.track(w.name, labels, owner, spec, 0)
	for i := 0; i < w.replicas; i++ {
		if err := replicaSets.createPod(ctx, kube, w.name); err != nil {
			return err
		}
	}
	replicaSets.setReplicas(w.name, w.replicas)
	return nil
}

// scaleWorkloadToZero is "kubectl scale --replicas=0" with the harness as the ReplicaSet controller.
func scaleWorkloadToZero(ctx context.Context, kube kubernetes.Interface, name string) error {
	rs, err := kube.AppsV1().ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	zero32 := int32(0)
	rs.Spec.Replicas = &zero32
	if _, err := kube.AppsV1().ReplicaSets(ns).Update(ctx, rs, metav1.UpdateOptions{}); err != nil {
		return err
	}
	replicaSets.setReplicas(name, 0)
	pods, err := podsOf(ctx, kube, name)
	if err != nil {
		return err
	}
	for _, p := range pods {
		if err := kube.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

func podUnschedulable(p corev1.Pod) (bool, string) {
	if p.Spec.NodeName != "" {
		return false, ""
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true, c.Message
		}
	}
	return false, ""
}

func podRunning(p corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func hasTaint(n corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// groupNodes returns the joined Nodes of a group id "<deployment>/<group>".
func groupNodes(ctx context.Context, kube kubernetes.Interface, gid string) ([]corev1.Node, error) {
	dep, grp, _ := strings.Cut(gid, "/")
	l, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{
		LabelSelector: fmt.Sprintf("%s=true,cloudify.co/deployment=%s,cloudify.co/scaling-group=%s", joinedLabel, dep, grp),
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(l.Items, func(a, b int) bool { return l.Items[a].Name < l.Items[b].Name })
	return l.Items, nil
}

// watcher polls the cluster and the simulator and turns changes into timeline events; it also keeps
// what it saw for the scenario's assertions.
type watcher struct {
	kube kubernetes.Interface
	cfy  *cloudifyClient
	tl   *Timeline

	mu         sync.Mutex
	execs      map[string]execution // by id, latest
	execOrder  []string
	readyNodes map[string]bool
	tainted    map[string]map[string]bool // node name -> taint keys seen
	taintedPID map[string]string          // node name -> provider id (for ToBeDeleted)
	events     map[string]int32           // event uid -> count seen
	caEvents   []corev1.Event
}

func newWatcher(kube kubernetes.Interface, cfy *cloudifyClient, tl *Timeline) *watcher {
	return &watcher{kube: kube, cfy: cfy, tl: tl, execs: map[string]execution{}, readyNodes: map[string]bool{},
		tainted: map[string]map[string]bool{}, taintedPID: map[string]string{}, events: map[string]int32{}}
}

const (
	taintToBeDeleted = "ToBeDeletedByClusterAutoscaler"
	taintCandidate   = "DeletionCandidateOfClusterAutoscaler"
)

func (w *watcher) run(ctx context.Context) {
	every := func(d time.Duration, f func(context.Context)) {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			f(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
	// Node readiness and taints are timeline steps of their own: poll them often.
	go every(200*time.Millisecond, w.pollNodes)
	go every(1*time.Second, w.pollEvents)
	every(300*time.Millisecond, w.pollExecutions)
}

// lastLine keeps the last non-empty line of a multi-line error (a workflow traceback ends with
// the exception text).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return ""
}

func describeExec(ex execution) string {
	s := fmt.Sprintf("execution %s %s on %s delta %+d", shortID(ex.ID), ex.WorkflowID, ex.DeploymentID, executionDelta(ex))
	if inc := executionInclude(ex); len(inc) > 0 {
		s += fmt.Sprintf(" include_instances %v", inc)
	}
	return s
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func (w *watcher) pollExecutions(ctx context.Context) {
	list, err := w.cfy.executions(ctx)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ex := range list {
		old, known := w.execs[ex.ID]
		w.execs[ex.ID] = ex
		if !known {
			w.execOrder = append(w.execOrder, ex.ID)
			w.tl.Event("cloudify: %s created (%s)", describeExec(ex), ex.Status)
		}
		if (!known || old.Status != ex.Status) && isEndState(ex.Status) {
			msg := ""
			if ex.Error != "" {
				msg = ": " + truncate(lastLine(ex.Error), 200)
			}
			w.tl.Event("cloudify: execution %s %s%s", shortID(ex.ID), ex.Status, msg)
		}
	}
}

func (w *watcher) pollNodes(ctx context.Context) {
	l, err := w.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range l.Items {
		if nodeReady(n) && !w.readyNodes[n.Name] {
			w.readyNodes[n.Name] = true
			w.tl.Event("kubelet(kwok): node %s Ready", n.Name)
		}
		for _, key := range []string{taintCandidate, taintToBeDeleted} {
			if hasTaint(n, key) {
				if w.tainted[n.Name] == nil {
					w.tainted[n.Name] = map[string]bool{}
				}
				if !w.tainted[n.Name][key] {
					w.tainted[n.Name][key] = true
					what := "marked unneeded (soft taint " + key + ")"
					if key == taintToBeDeleted {
						what = "being removed (taint " + key + ")"
						w.taintedPID[n.Name] = n.Spec.ProviderID
					}
					w.tl.Event("cluster-autoscaler: node %s %s", n.Name, what)
				}
			}
		}
	}
}

func (w *watcher) pollEvents(ctx context.Context) {
	l, err := w.kube.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range l.Items {
		if e.Source.Component != "cluster-autoscaler" && e.ReportingController != "cluster-autoscaler" {
			continue
		}
		uid := string(e.UID)
		if c, ok := w.events[uid]; ok && c == e.Count {
			continue
		}
		first := w.events[uid] == 0
		w.events[uid] = e.Count
		w.caEvents = append(w.caEvents, e)
		if first {
			w.tl.Event("cluster-autoscaler event %s/%s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, truncate(e.Message, 200))
		}
	}
}

// executionsSince returns executions created after the watcher had seen `after` executions.
func (w *watcher) execCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.execOrder)
}

func (w *watcher) executionsSince(n int) []execution {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []execution
	for _, id := range w.execOrder[n:] {
		out = append(out, w.execs[id])
	}
	return out
}

func (w *watcher) caEventsWithReason(reasons ...string) []corev1.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []corev1.Event
	for _, e := range w.caEvents {
		for _, r := range reasons {
			if e.Reason == r {
				out = append(out, e)
			}
		}
	}
	return out
}

func (w *watcher) toBeDeletedPIDs() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]string{}
	for k, v := range w.taintedPID {
		out[k] = v
	}
	return out
}
