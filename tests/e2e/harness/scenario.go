package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// scenario drives the phases. Each phase is one named check; the first step that does not happen in
// time fails the phase with a message that says which step, and the run stops there (later phases
// depend on the cluster being in the state the previous one left).
type scenario struct {
	kube   kubernetes.Interface
	cfy    *cloudifyClient
	joiner *Joiner
	w      *watcher
	tl     *Timeline
	withCA bool

	pool     string // "<deployment>/<group>" scaled by pending pods, min >= 1
	poolMin  int
	poolSel  map[string]string
	zero     string // group at 0 with a template
	zeroSel  map[string]string
	slow     float64  // multiplies every timeout (slow machines)
	inspect  []string // `autoscaler-cloudify inspect --cloud-config F` (empty: skip the gRPC checks)
	failures []string

	priceCheap, priceDear string            // two groups with the same template label and different prices
	priceSel              map[string]string // their template label
	slowGroup             string            // group with per-group options whose Nodes boot slowly
	slowSel               map[string]string
	slowBoot              time.Duration
	allGroups             []string
	caLog                 *caLog
	caRestart             []string // command restarting CA (same flags), empty: phase skipped
	caHealth              string   // CA's /health-check URL
	metricsURL            string   // the provider's /metrics

	poolObject string // the CloudifyNodePool serving pool, for the pool-delete phase (issue 22)

	created map[string]time.Time // workload -> when its pods were created
	cur     *phaseStat           // statistics of the running phase
}

type stepErr struct{ msg string }

func (e stepErr) Error() string { return e.msg }

func (s *scenario) waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	timeout = time.Duration(float64(timeout) * s.slow)
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if err == nil && ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("step did not happen within %v: %s", timeout, what)
			if lastErr != nil {
				msg += fmt.Sprintf(" (last error: %v)", lastErr)
			}
			s.tl.Event("FAIL: %s", msg)
			return stepErr{msg}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// create starts a workload and notes when, for the pending -> Running column of the summary.
func (s *scenario) create(ctx context.Context, w workload) error {
	s.created[w.name] = time.Now()
	return createWorkload(ctx, s.kube, w)
}

func split(gid string) (string, string) {
	d, g, _ := strings.Cut(gid, "/")
	return d, g
}

// groupAt waits until a group has exactly n Ready joined Nodes, n instances in Cloudify, and no
// scale execution of its deployment still running.
func (s *scenario) groupAt(ctx context.Context, gid string, n int, timeout time.Duration) error {
	dep, grp := split(gid)
	return s.waitFor(ctx, timeout, fmt.Sprintf("group %s at %d (Cloudify current_instances and Ready Nodes)", gid, n), func() (bool, error) {
		cur, _, err := s.cfy.groupSize(ctx, dep, grp)
		if err != nil {
			return false, err
		}
		nodes, err := groupNodes(ctx, s.kube, gid)
		if err != nil {
			return false, err
		}
		ready := 0
		for _, nd := range nodes {
			if nodeReady(nd) {
				ready++
			}
		}
		return cur == n && len(nodes) == n && ready == n && !s.running(dep), nil
	})
}

func (s *scenario) running(dep string) bool {
	for _, ex := range s.w.executionsSince(0) {
		if ex.DeploymentID == dep && !isEndState(ex.Status) {
			return true
		}
	}
	return false
}

func (s *scenario) waitUnschedulable(ctx context.Context, app string, atLeast int) error {
	return s.waitFor(ctx, 60*time.Second, fmt.Sprintf("%d pod(s) of %s marked Unschedulable by kube-scheduler", atLeast, app), func() (bool, error) {
		pods, err := podsOf(ctx, s.kube, app)
		if err != nil {
			return false, err
		}
		n, msg := 0, ""
		for _, p := range pods {
			if u, m := podUnschedulable(p); u {
				n++
				msg = m
			}
		}
		if n >= atLeast {
			s.tl.Event("kube-scheduler: %d/%d pods of %s Pending, PodScheduled=False Unschedulable: %q", n, len(pods), app, truncate(msg, 120))
			return true, nil
		}
		return false, nil
	})
}

func (s *scenario) waitRunning(ctx context.Context, app string, n int, timeout time.Duration) error {
	return s.waitFor(ctx, timeout, fmt.Sprintf("all %d pods of %s Running", n, app), func() (bool, error) {
		pods, err := podsOf(ctx, s.kube, app)
		if err != nil {
			return false, err
		}
		r := 0
		nodes := map[string]bool{}
		for _, p := range pods {
			if podRunning(p) {
				r++
				nodes[p.Spec.NodeName] = true
			}
		}
		if r == n {
			s.tl.Event("kwok: all %d pods of %s Running on %d nodes", n, app, len(nodes))
			if t0, ok := s.created[app]; ok && s.cur != nil {
				s.cur.pending = append(s.cur.pending, fmt.Sprintf("%s %.1fs", app, time.Since(t0).Seconds()))
			}
			return true, nil
		}
		return false, nil
	})
}

func (s *scenario) waitGone(ctx context.Context, app string) error {
	return s.waitFor(ctx, 60*time.Second, "pods of "+app+" deleted", func() (bool, error) {
		pods, err := podsOf(ctx, s.kube, app)
		return err == nil && len(pods) == 0, err
	})
}

// waitExecution waits for a new scale execution on a deployment (created after mark) matching
// the sign of delta, and returns it once it reached an end state.
func (s *scenario) waitExecution(ctx context.Context, mark int, dep string, positive bool, timeout time.Duration, label string) (execution, error) {
	var found execution
	err := s.waitFor(ctx, timeout, fmt.Sprintf("%s: a scale execution on %s (delta %s0)", label, dep, map[bool]string{true: ">", false: "<"}[positive]), func() (bool, error) {
		for _, ex := range s.w.executionsSince(mark) {
			if ex.DeploymentID == dep && ex.WorkflowID == "scale" && (executionDelta(ex) > 0) == positive {
				found = ex
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return found, err
	}
	s.tl.Event("%s -> %s", label, describeExec(found))
	err = s.waitFor(ctx, 60*time.Second, "execution "+found.ID+" reaches an end state", func() (bool, error) {
		for _, ex := range s.w.executionsSince(mark) {
			if ex.ID == found.ID {
				found = ex
				return isEndState(ex.Status), nil
			}
		}
		return false, nil
	})
	return found, err
}

func (s *scenario) baseline(ctx context.Context) error {
	s.tl.Phase("0 baseline")
	if err := s.groupAt(ctx, s.pool, s.poolMin, 60*time.Second); err != nil {
		return err
	}
	if s.zero == "" { // a real manager's run has no group at 0
		s.tl.Event("group %s at min %d with Ready nodes", s.pool, s.poolMin)
		return s.checkRegistration(ctx, s.pool)
	}
	if err := s.groupAt(ctx, s.zero, 0, 30*time.Second); err != nil {
		return err
	}
	s.tl.Event("group %s at min %d with Ready nodes; group %s at 0", s.pool, s.poolMin, s.zero)
	return s.checkRegistration(ctx, s.pool)
}

// scaleUp: pods that do not fit -> Unschedulable -> IncreaseSize -> scale execution -> nodes join ->
// pods Running.
func (s *scenario) scaleUp(ctx context.Context) error {
	s.tl.Phase("1 scale-up")
	dep, grp := split(s.pool)
	mark := s.w.execCount()
	if err := s.create(ctx, workload{name: "web", replicas: 6, cpu: "900m", memory: "512Mi", selector: s.poolSel}); err != nil {
		return err
	}
	s.tl.Event("harness: ReplicaSet web with 6 pods (900m CPU each, 2 fit per node) created")
	if err := s.waitUnschedulable(ctx, "web", 1); err != nil {
		return err
	}
	if s.withCA {
		if _, err := s.waitExecution(ctx, mark, dep, true, 90*time.Second, "cluster-autoscaler IncreaseSize"); err != nil {
			return err
		}
	} else {
		ex, err := s.cfy.scale(ctx, dep, grp, 2, nil)
		if err != nil {
			return err
		}
		s.tl.Event("harness (no CA): started scale +2 on %s as an operator would (execution %s)", s.pool, shortID(ex.ID))
		if _, err := s.waitExecution(ctx, mark, dep, true, 30*time.Second, "operator scale"); err != nil {
			return err
		}
	}
	if err := s.waitRunning(ctx, "web", 6, 150*time.Second); err != nil {
		return err
	}
	if err := s.groupAt(ctx, s.pool, s.poolMin+2, 60*time.Second); err != nil {
		return err
	}
	return s.checkRegistration(ctx, s.pool)
}

// scaleDown: workload to zero -> CA finds nodes unneeded -> DeleteNodes -> exactly those instances
// removed in Cloudify -> group back at min.
func (s *scenario) scaleDown(ctx context.Context) error {
	s.tl.Phase("2 scale-down")
	dep, grp := split(s.pool)
	before := s.joiner.VMs()
	phaseStart := time.Now() // issue 15: see removedSince
	mark := s.w.execCount()
	if err := scaleWorkloadToZero(ctx, s.kube, "web"); err != nil {
		return err
	}
	s.tl.Event("harness: ReplicaSet web scaled to 0 (pods deleted)")
	if err := s.waitGone(ctx, "web"); err != nil {
		return err
	}
	var victims []string
	if !s.withCA {
		// Pick the two newest nodes, as an operator draining them would.
		nodes, err := groupNodes(ctx, s.kube, s.pool)
		if err != nil {
			return err
		}
		sort.Slice(nodes, func(a, b int) bool { return nodes[a].CreationTimestamp.After(nodes[b].CreationTimestamp.Time) })
		for _, n := range nodes[:2] {
			victims = append(victims, n.Spec.ProviderID[strings.LastIndex(n.Spec.ProviderID, "/")+1:])
		}
		ex, err := s.cfy.scale(ctx, dep, grp, -2, victims)
		if err != nil {
			return err
		}
		s.tl.Event("harness (no CA): started scale -2 include_instances %v (execution %s)", victims, shortID(ex.ID))
	}
	if _, err := s.waitExecution(ctx, mark, dep, false, 120*time.Second, map[bool]string{true: "cluster-autoscaler DeleteNodes", false: "operator scale-in"}[s.withCA]); err != nil {
		return err
	}
	if err := s.groupAt(ctx, s.pool, s.poolMin, 120*time.Second); err != nil {
		return err
	}
	// The group's current_instances can reach min before the last removed instance row is gone:
	// the real manager deletes the rows one by one as its scale workflow ends, and the joiner polls
	// every 500 ms. So compare again until the two sets agree or the joiner has had 30 s to see
	// every removal; a wrong VM removed never converges, so this hides no defect.
	operatorVictims := victims
	var removed []string
	if err := s.waitFor(ctx, 30*time.Second, "instances removed in Cloudify == nodes chosen for deletion", func() (bool, error) {
		phase := s.phaseVMs(before, phaseStart)
		removed = s.removedThisPhase(phase)
		if s.withCA {
			victims = s.chosenByCA(dep, phase)
		} else {
			victims = operatorVictims
		}
		if strings.Join(removed, ",") != strings.Join(victims, ",") {
			return false, fmt.Errorf("instances removed in Cloudify %v != nodes chosen for deletion %v", removed, victims)
		}
		return true, nil
	}); err != nil {
		return err
	}
	s.tl.Event("exactly the chosen instances %v were removed; %s back at min %d", removed, s.pool, s.poolMin)
	return nil
}

// phaseVMs is every VM instance that belongs to the phase: those present at its start plus any
// that came and went meanwhile (issue 15: CA can add a Node while new ones are still tainted).
func (s *scenario) phaseVMs(before map[string]nodeInstance, phaseStart time.Time) map[string]nodeInstance {
	vms := make(map[string]nodeInstance, len(before))
	for id, ni := range before {
		vms[id] = ni
	}
	for id, ni := range s.joiner.removedSince(phaseStart) {
		vms[id] = ni
	}
	return vms
}

// removedThisPhase lists, sorted, the pool's VM instances of the phase the joiner no longer sees.
func (s *scenario) removedThisPhase(phase map[string]nodeInstance) []string {
	after := s.joiner.VMs()
	var removed []string
	for id, ni := range phase {
		if _, ok := after[id]; !ok && groupID(ni) == s.pool {
			removed = append(removed, id)
		}
	}
	sort.Strings(removed)
	return removed
}

// chosenByCA lists, sorted, the instance ids of the Nodes CA chose for deletion in this phase: the
// Nodes it tainted ToBeDeletedByClusterAutoscaler, plus (in case a taint came and went between two
// polls) the Nodes it recorded a ScaleDown event for.
func (s *scenario) chosenByCA(dep string, phase map[string]nodeInstance) []string {
	chosen := map[string]bool{}
	for _, pid := range s.w.toBeDeletedPIDs() {
		chosen[pid] = true
	}
	for _, e := range s.w.caEventsWithReason("ScaleDown") {
		if e.InvolvedObject.Kind == "Node" {
			if pid := s.joiner.providerIDOf(e.InvolvedObject.Name); pid != "" {
				chosen[pid] = true
			}
		}
	}
	var victims []string
	for pid := range chosen {
		id := pid[strings.LastIndex(pid, "/")+1:]
		// issue 15: only this phase's Nodes (an extra Node CA added and removed in scale-up is not one)
		if _, inPhase := phase[id]; strings.HasPrefix(pid, fmt.Sprintf("cloudify://%s/%s/", s.cfy.tenant, dep)) && inPhase {
			victims = append(victims, id)
		}
	}
	sort.Strings(victims)
	return victims
}

// fromZero: a group at 0 with a template; pods select its label.
func (s *scenario) fromZero(ctx context.Context) error {
	s.tl.Phase("3 scale-from-zero")
	dep, grp := split(s.zero)
	mark := s.w.execCount()
	if err := s.create(ctx, workload{name: "batch", replicas: 2, cpu: "1500m", memory: "1Gi", selector: s.zeroSel}); err != nil {
		return err
	}
	s.tl.Event("harness: ReplicaSet batch with 2 pods selecting %v (group %s has 0 nodes) created", s.zeroSel, s.zero)
	if err := s.waitUnschedulable(ctx, "batch", 2); err != nil {
		return err
	}
	if s.withCA {
		if _, err := s.waitExecution(ctx, mark, dep, true, 90*time.Second, "cluster-autoscaler IncreaseSize (from template)"); err != nil {
			return err
		}
	} else {
		ex, err := s.cfy.scale(ctx, dep, grp, 2, nil)
		if err != nil {
			return err
		}
		s.tl.Event("harness (no CA): started scale +2 on %s (execution %s)", s.zero, shortID(ex.ID))
		if _, err := s.waitExecution(ctx, mark, dep, true, 30*time.Second, "operator scale"); err != nil {
			return err
		}
	}
	if err := s.waitRunning(ctx, "batch", 2, 150*time.Second); err != nil {
		return err
	}
	if err := s.checkRegistration(ctx, s.zero); err != nil {
		return err
	}
	if err := scaleWorkloadToZero(ctx, s.kube, "batch"); err != nil {
		return err
	}
	s.tl.Event("harness: ReplicaSet batch scaled to 0")
	if !s.withCA {
		vms := s.joiner.VMs()
		var ids []string
		for id, ni := range vms {
			if groupID(ni) == s.zero {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		ex, err := s.cfy.scale(ctx, dep, grp, -len(ids), ids)
		if err != nil {
			return err
		}
		s.tl.Event("harness (no CA): started scale %+d include_instances %v (execution %s)", -len(ids), ids, shortID(ex.ID))
	}
	// Wait for the way back to 0 here, so that no scale-down of this group is in flight when the
	// next phase injects a failure into "the next execution".
	if err := s.groupAt(ctx, s.zero, 0, 150*time.Second); err != nil {
		return err
	}
	s.tl.Event("group %s back at 0", s.zero)
	return nil
}

// failedScaleOut: the next execution fails -> CA reports the failure and backs the group off, well
// before the default 15 minutes, then recovers.
func (s *scenario) failedScaleOut(ctx context.Context) error {
	s.tl.Phase("4 failed scale-out")
	dep, grp := split(s.pool)
	start := time.Now()
	mark := s.w.execCount()
	if err := s.cfy.faults(ctx, map[string]any{"fail_next_executions": 1, "fail_reason": "e2e: injected failure (quota exceeded)"}); err != nil {
		return err
	}
	if s.cfy.manager {
		s.tl.Event("harness: fault switch: the next VM create fails once (quota)")
	} else {
		s.tl.Event("harness: simulator fault fail_next_executions=1")
	}
	if err := s.create(ctx, workload{name: "burst", replicas: 3, cpu: "900m", memory: "512Mi", selector: s.poolSel}); err != nil {
		return err
	}
	s.tl.Event("harness: ReplicaSet burst with 3 pods (one does not fit) created")
	if err := s.waitUnschedulable(ctx, "burst", 1); err != nil {
		return err
	}
	if !s.withCA {
		if _, err := s.cfy.scale(ctx, dep, grp, 1, nil); err != nil {
			return err
		}
		ex, err := s.waitExecution(ctx, mark, dep, true, 30*time.Second, "operator scale")
		if err != nil {
			return err
		}
		if ex.Status != "failed" {
			return stepErr{fmt.Sprintf("execution %s ended %s, want failed", ex.ID, ex.Status)}
		}
		time.Sleep(3 * time.Second)
		s.showNodes(ctx, s.pool)
		if err := s.groupAt(ctx, s.pool, s.poolMin, 30*time.Second); err != nil {
			return err
		}
		s.tl.Event("failed execution left %s at %d and no node joined", s.pool, s.poolMin)
		return scaleWorkloadToZero(ctx, s.kube, "burst")
	}
	ex, err := s.waitExecution(ctx, mark, dep, true, 90*time.Second, "cluster-autoscaler IncreaseSize")
	if err != nil {
		return err
	}
	if ex.Status != "failed" {
		return stepErr{fmt.Sprintf("execution %s ended %s, want failed (injected)", ex.ID, ex.Status)}
	}
	s.showNodes(ctx, s.pool)
	reasons := []string{"ScaleUpFailed", "ScaleUpTimedOut", "FailedToScaleUpGroup"}
	if err := s.waitFor(ctx, 120*time.Second, fmt.Sprintf("cluster-autoscaler reports the failed scale-up (event %v) and backs off %s", reasons, s.pool), func() (bool, error) {
		evs := s.w.caEventsWithReason(reasons...)
		if len(evs) == 0 {
			return false, nil
		}
		cm, err := s.kube.CoreV1().ConfigMaps("kube-system").Get(ctx, "cluster-autoscaler-status", metav1.GetOptions{})
		backoff := err == nil && strings.Contains(cm.Data["status"], "Backoff")
		s.tl.Event("cluster-autoscaler: failure reported (%s: %s); status ConfigMap shows Backoff: %v",
			evs[0].Reason, truncate(evs[0].Message, 160), backoff)
		return true, nil
	}); err != nil {
		return err
	}
	elapsed := time.Since(start)
	s.tl.Event("failure detected and group backed off after %.0fs (CA default would be 15m)", elapsed.Seconds())
	if err := s.waitRunning(ctx, "burst", 3, 180*time.Second); err != nil {
		return err
	}
	s.tl.Event("recovered after backoff: the next IncreaseSize succeeded")
	return scaleWorkloadToZero(ctx, s.kube, "burst")
}

func (s *scenario) finalChecks(ctx context.Context) error {
	s.tl.Phase("13 back to min")
	if err := s.groupAt(ctx, s.pool, s.poolMin, 150*time.Second); err != nil {
		return err
	}
	s.tl.Event("group %s back at min %d", s.pool, s.poolMin)
	return nil
}
