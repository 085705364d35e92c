package main

// Phases where CA's own logic meets ours (CA mode only): a manager outage, per-group options and
// CA 1.36's MaxNodeStartupTime gap, the price expander with fail-over, a drain before scale-down,
// and a CA restart in the middle of a scale-up. Each phase leaves the groups it used at their
// minimum, so phases can be added or reordered.

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// outageDuration is how long the manager is down in the outage phase (issue 14: 60 s).
const outageDuration = 60 * time.Second

// outageCheck is one assertion about the outage window, run once the manager is back. Other
// phases' authors append to outageChecks (e.g. "no Node was deleted while the manager was down").
type outageCheck struct {
	name  string
	check func(ctx context.Context, s *scenario, w outageWindow) error
}

// outageWindow is what the outage phase observed, for outageChecks.
type outageWindow struct {
	down, up     time.Time
	caLogOffset  int64           // CA log at the start of the outage
	execMark     int             // executions seen before the outage
	nodesAtStart map[string]bool // Node names at the start of the outage
}

var outageChecks = []outageCheck{
	{"nothing scaled while the manager was down", func(_ context.Context, s *scenario, w outageWindow) error {
		for _, ex := range s.w.executionsSince(w.execMark) {
			if t, err := time.Parse(time.RFC3339Nano, ex.CreatedAt); err == nil && t.Before(w.up) {
				return fmt.Errorf("execution %s created at %s, during the outage", describeExec(ex), ex.CreatedAt)
			}
		}
		return nil
	}},
	{"CA logged no failed loop caused by our RPCs", func(_ context.Context, s *scenario, w outageWindow) error {
		if errs := s.caErrorsNamingUs(w.caLogOffset); len(errs) > 0 {
			return fmt.Errorf("%d CA error line(s) naming our RPCs/groups during the outage:\n  %s", len(errs), strings.Join(errs, "\n  "))
		}
		return nil
	}},
}

// managerOutage: the Cloudify manager is down (503 maintenance mode) for 60 s while CA loops and
// new pods go pending; then it returns.
func (s *scenario) managerOutage(ctx context.Context) error {
	s.tl.Phase("6 manager outage 60s")
	if err := s.groupAt(ctx, s.pool, s.poolMin, 150*time.Second); err != nil { // from the previous phase
		return err
	}
	dep, _ := split(s.pool)
	w := outageWindow{caLogOffset: s.caLog.mark(), execMark: s.w.execCount(), nodesAtStart: map[string]bool{}}
	if nodes, err := s.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nodes.Items {
			w.nodesAtStart[n.Name] = true
		}
	}
	if err := s.cfy.faults(ctx, map[string]any{"down": true}); err != nil {
		return err
	}
	w.down = time.Now()
	s.tl.Event("harness: simulator fault down=true (every request answers 503 maintenance_mode_active)")
	// The pods go pending once the provider has noticed (its next refresh, at most a refresh
	// interval): a CA loop inside that first gap may still try a scale-up and get UNAVAILABLE,
	// which is the truth, not a failed loop this phase is about (docs/operations.md).
	if err := s.waitFor(ctx, 30*time.Second, "the provider notices the manager is down (/readyz cloudify_reachable false)", func() (bool, error) {
		return providerSeesCloudifyDown(ctx, s.metricsURL)
	}); err != nil {
		return err
	}
	s.tl.Event("provider: /readyz reports Cloudify unreachable %.1fs after the outage began (bounds frozen from now)", time.Since(w.down).Seconds())
	if err := s.create(ctx, workload{name: "outage", replicas: 3, cpu: "900m", memory: "512Mi", selector: s.poolSel}); err != nil {
		return err
	}
	s.tl.Event("harness: ReplicaSet outage with 3 pods (one needs a new node) created while the manager is down")
	if err := s.waitUnschedulable(ctx, "outage", 1); err != nil {
		return err
	}
	// The outage lasts its full length whatever happens; meanwhile report what CA does.
	loopsBefore, _ := s.caLinesContaining(w.caLogOffset, "Starting main loop")
	for time.Since(w.down) < outageDuration {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(w.down.Add(outageDuration))):
		}
	}
	loops, _ := s.caLinesContaining(w.caLogOffset, "Starting main loop")
	s.tl.Event("cluster-autoscaler ran %d loops during the %v outage", len(loops)-len(loopsBefore), outageDuration)
	upOffset := s.caLog.mark()
	if err := s.cfy.faults(ctx, map[string]any{"down": false}); err != nil {
		return err
	}
	w.up = time.Now()
	s.tl.Event("harness: simulator fault down=false (manager back)")
	for _, c := range outageChecks {
		if err := c.check(ctx, s, w); err != nil {
			msg := fmt.Sprintf("outage check %q: %v", c.name, err)
			s.tl.Event("FAIL: %s", msg)
			return stepErr{msg}
		}
		s.tl.Event("outage check passed: %s", c.name)
	}
	if _, err := s.waitExecution(ctx, w.execMark, dep, true, 60*time.Second, "cluster-autoscaler IncreaseSize after the outage"); err != nil {
		return err
	}
	// Within two CA loops of the return: CA's own "Scale-up: setting group" line must come before
	// the third "Starting main loop" after the manager answered again.
	_, ups := s.caLinesContaining(upOffset, "Scale-up: setting group "+s.pool)
	_, loopStarts := s.caLinesContaining(upOffset, "Starting main loop")
	if len(ups) == 0 {
		return stepErr{"no 'Scale-up: setting group " + s.pool + "' line in CA's log after the manager came back"}
	}
	n := 0
	for _, t := range loopStarts {
		if !t.After(ups[0]) {
			n++
		}
	}
	s.tl.Event("cluster-autoscaler scaled up in loop %d after the manager came back (%.1fs later)", n, ups[0].Sub(w.up).Seconds())
	if n > 2 {
		msg := fmt.Sprintf("CA scaled up only in loop %d after the manager came back, want within 2", n)
		s.tl.Event("FAIL: %s", msg)
		return stepErr{msg}
	}
	if err := s.waitRunning(ctx, "outage", 3, 120*time.Second); err != nil {
		return err
	}
	if err := scaleWorkloadToZero(ctx, s.kube, "outage"); err != nil {
		return err
	}
	return s.groupAt(ctx, s.pool, s.poolMin, 150*time.Second)
}

// drainScaleDown: a node that runs a pod is unneeded (its pod fits elsewhere): CA drains it (the
// pod is evicted and replaced on the other node), then deletes exactly that VM.
func (s *scenario) drainScaleDown(ctx context.Context) error {
	s.tl.Phase("7 drain + scale-down")
	if err := s.groupAt(ctx, s.pool, s.poolMin, 150*time.Second); err != nil { // from the previous phase
		return err
	}
	dep, _ := split(s.pool)
	mark := s.w.execCount()
	if err := s.create(ctx, workload{name: "drain", replicas: 3, cpu: "900m", memory: "512Mi", selector: s.poolSel}); err != nil {
		return err
	}
	s.tl.Event("harness: ReplicaSet drain with 3 pods (2 fit per node) created")
	if _, err := s.waitExecution(ctx, mark, dep, true, 90*time.Second, "cluster-autoscaler IncreaseSize"); err != nil {
		return err
	}
	if err := s.waitRunning(ctx, "drain", 3, 150*time.Second); err != nil {
		return err
	}
	// Down to one pod per node: both nodes at 45 % (< the 0.5 threshold), and either pod fits on
	// the other node, so CA can empty one of them only by draining it.
	replicaSets.setReplicas("drain", 2)
	pods, err := podsOf(ctx, s.kube, "drain")
	if err != nil {
		return err
	}
	perNode := map[string][]string{}
	for _, p := range pods {
		perNode[p.Spec.NodeName] = append(perNode[p.Spec.NodeName], p.Name)
	}
	for node, names := range perNode {
		if len(names) == 2 {
			if err := s.kube.CoreV1().Pods(ns).Delete(ctx, names[1], metav1.DeleteOptions{}); err != nil {
				return err
			}
			s.tl.Event("harness: ReplicaSet drain scaled to 2: pod %s on %s deleted, one pod per node left", names[1], node)
		}
	}
	podNode := map[string]string{} // pod -> node, once one pod per node
	if err := s.waitFor(ctx, 30*time.Second, "one Running pod of drain on each of the 2 nodes", func() (bool, error) {
		pods, err := podsOf(ctx, s.kube, "drain")
		if err != nil {
			return false, err
		}
		seen := map[string]bool{}
		podNode = map[string]string{}
		for _, p := range pods {
			if podRunning(p) {
				seen[p.Spec.NodeName] = true
				podNode[p.Name] = p.Spec.NodeName
			}
		}
		return len(pods) == 2 && len(seen) == 2, nil
	}); err != nil {
		return err
	}
	mark = s.w.execCount()
	// CA picks a victim: the node it taints ToBeDeletedByClusterAutoscaler. Its pod must be gone
	// (evicted) before the scale-in execution exists.
	var victim, evicted string
	if err := s.waitFor(ctx, 150*time.Second, "cluster-autoscaler taints one of the two nodes ToBeDeletedByClusterAutoscaler", func() (bool, error) {
		for name := range s.w.toBeDeletedPIDs() {
			for pod, node := range podNode {
				if node == name {
					victim, evicted = name, pod
					return true, nil
				}
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	s.tl.Event("cluster-autoscaler chose %s (running pod %s) for removal", victim, evicted)
	if err := s.waitFor(ctx, 60*time.Second, "pod "+evicted+" evicted from "+victim, func() (bool, error) {
		p, err := s.kube.CoreV1().Pods(ns).Get(ctx, evicted, metav1.GetOptions{})
		if err == nil && p.DeletionTimestamp == nil {
			return false, nil
		}
		for _, ex := range s.w.executionsSince(mark) {
			if ex.DeploymentID == dep && executionDelta(ex) < 0 {
				return false, fmt.Errorf("scale-in %s started before %s was drained", describeExec(ex), evicted)
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	s.tl.Event("cluster-autoscaler drained %s: pod %s evicted before any scale-in", victim, evicted)
	ex, err := s.waitExecution(ctx, mark, dep, false, 90*time.Second, "cluster-autoscaler DeleteNodes")
	if err != nil {
		return err
	}
	pid := s.joiner.providerIDOf(victim)
	want := pid[strings.LastIndex(pid, "/")+1:]
	if inc := executionInclude(ex); len(inc) != 1 || inc[0] != want {
		msg := fmt.Sprintf("scale-in include_instances %v, want exactly the drained node's VM [%s]", inc, want)
		s.tl.Event("FAIL: %s", msg)
		return stepErr{msg}
	}
	// Two nodes before, the drained one gone: back at min.
	if err := s.groupAt(ctx, s.pool, s.poolMin, 90*time.Second); err != nil {
		return err
	}
	// The joiner's view of Cloudify lags by one poll: wait for it rather than sample it.
	if err := s.waitFor(ctx, 30*time.Second, "VM "+want+" of the drained node gone from Cloudify", func() (bool, error) {
		_, still := s.joiner.VMs()[want]
		return !still, nil
	}); err != nil {
		return err
	}
	if err := s.waitRunning(ctx, "drain", 2, 60*time.Second); err != nil {
		return err
	}
	s.tl.Event("exactly VM %s (node %s) went; both pods Running on the remaining node", want, victim)
	return scaleWorkloadToZero(ctx, s.kube, "drain")
}

// priceExpander: two pools with the same template label, prices 0.05/h and 0.20/h, CA runs
// --expander=price. CA picks the cheaper pool; its scale-out fails (injected), CA falls over to
// the other pool.
func (s *scenario) priceExpander(ctx context.Context) error {
	s.tl.Phase("8 price expander")
	cheapDep, _ := split(s.priceCheap)
	dearDep, _ := split(s.priceDear)
	mark := s.w.execCount()
	if err := s.cfy.faults(ctx, map[string]any{"fail_next_executions": 1, "fail_reason": "e2e: injected failure (quota exceeded in the cheap pool)"}); err != nil {
		return err
	}
	s.tl.Event("harness: simulator fault fail_next_executions=1")
	if err := s.create(ctx, workload{name: "priced", replicas: 1, cpu: "900m", memory: "512Mi", selector: s.priceSel}); err != nil {
		return err
	}
	s.tl.Event("harness: ReplicaSet priced with 1 pod selecting %v (pools %s at 0.05/h, %s at 0.20/h, both at 0)", s.priceSel, s.priceCheap, s.priceDear)
	var first execution
	if err := s.waitFor(ctx, 90*time.Second, "cluster-autoscaler's first scale-up for the priced pod", func() (bool, error) {
		for _, ex := range s.w.executionsSince(mark) {
			if executionDelta(ex) > 0 {
				first = ex
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	if first.DeploymentID != cheapDep {
		msg := fmt.Sprintf("CA's first choice was %s, want the cheaper pool %s", describeExec(first), s.priceCheap)
		s.tl.Event("FAIL: %s", msg)
		return stepErr{msg}
	}
	s.tl.Event("cluster-autoscaler (price expander) picked the cheaper pool: %s", describeExec(first))
	if ex, err := s.waitExecution(ctx, mark, cheapDep, true, 30*time.Second, "cheap pool scale-out"); err != nil {
		return err
	} else if ex.Status != "failed" {
		return stepErr{fmt.Sprintf("execution %s ended %s, want failed (injected)", ex.ID, ex.Status)}
	}
	if _, err := s.waitExecution(ctx, mark, dearDep, true, 150*time.Second, "cluster-autoscaler falls over to the other pool"); err != nil {
		return err
	}
	if err := s.waitRunning(ctx, "priced", 1, 120*time.Second); err != nil {
		return err
	}
	pods, err := podsOf(ctx, s.kube, "priced")
	if err != nil {
		return err
	}
	node, err := s.kube.CoreV1().Nodes().Get(ctx, pods[0].Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if node.Labels["cloudify.co/deployment"] != dearDep {
		return stepErr{fmt.Sprintf("pod runs on %s of %s, want the fall-over pool %s", node.Name, node.Labels["cloudify.co/deployment"], dearDep)}
	}
	s.tl.Event("pod priced Running on %s (pool %s) after the cheap pool failed", node.Name, s.priceDear)
	if err := scaleWorkloadToZero(ctx, s.kube, "priced"); err != nil {
		return err
	}
	if err := s.groupAt(ctx, s.priceDear, 0, 150*time.Second); err != nil {
		return err
	}
	return s.groupAt(ctx, s.priceCheap, 0, 30*time.Second)
}

// startupOptions: a group with per-group options whose Nodes register NotReady and become Ready
// only after slowBoot. CA 1.36's GetOptions answer carries no MaxNodeStartupTime (upstream issue
// 10245), so CA uses 0 for this group: what does it make of the booting node?
func (s *scenario) startupOptions(ctx context.Context) error {
	s.tl.Phase("9 options: startup time")
	dep, _ := split(s.slowGroup)
	mark := s.w.execCount()
	if err := s.create(ctx, workload{name: "slowboot", replicas: 1, cpu: "900m", memory: "512Mi", selector: s.slowSel}); err != nil {
		return err
	}
	s.tl.Event("harness: ReplicaSet slowboot with 1 pod selecting %v; group %s has options and its Nodes boot for %v", s.slowSel, s.slowGroup, s.slowBoot)
	if _, err := s.waitExecution(ctx, mark, dep, true, 90*time.Second, "cluster-autoscaler IncreaseSize"); err != nil {
		return err
	}
	// While the node boots: CA's status ConfigMap says how it counts it.
	var counted string
	if err := s.waitFor(ctx, 60*time.Second, "the booting node of "+s.slowGroup+" in CA's status ConfigMap", func() (bool, error) {
		nodes, err := groupNodes(ctx, s.kube, s.slowGroup)
		if err != nil || len(nodes) == 0 || nodeReady(nodes[0]) {
			return false, err
		}
		c := s.statusCounts(ctx, s.slowGroup)
		if c["registered"] == 0 {
			return false, nil
		}
		counted = fmt.Sprintf("registered=%d ready=%d notStarted=%d unready=%d", c["registered"], c["ready"], c["notStarted"], c["unready"])
		return true, nil
	}); err != nil {
		return err
	}
	s.tl.Event("cluster-autoscaler status for %s while its node boots: %s (CA's default MaxNodeStartupTime 15m would count it notStarted)", s.slowGroup, counted)
	// The behaviour `check` warns about and docs/configuration.md documents: if this ever reads
	// notStarted, CA sends MaxNodeStartupTime again (issue 10245 fixed) and the advice can go.
	if c := s.statusCounts(ctx, s.slowGroup); c["unready"] != 1 || c["notStarted"] != 0 {
		return stepErr{fmt.Sprintf("CA counts the booting node of %s as %v, want unready (CA 1.36 without MaxNodeStartupTime): revisit the `check` warning", s.slowGroup, c)}
	}
	if err := s.waitRunning(ctx, "slowboot", 1, 150*time.Second); err != nil {
		return err
	}
	ups := 0
	for _, ex := range s.w.executionsSince(mark) {
		if ex.DeploymentID == dep && executionDelta(ex) > 0 {
			ups++
		}
	}
	nodes, _ := groupNodes(ctx, s.kube, s.slowGroup)
	s.tl.Event("cluster-autoscaler started %d scale-up(s) of %s for 1 pod; the group has %d node(s)", ups, s.slowGroup, len(nodes))
	if err := scaleWorkloadToZero(ctx, s.kube, "slowboot"); err != nil {
		return err
	}
	return s.groupAt(ctx, s.slowGroup, 0, 180*time.Second)
}

// statusSection returns one node group's entry of CA's status ConfigMap (YAML of CA 1.36: a list
// of "- health: {...}\n  name: <id>\n  scaleDown: ...", so the entry starts before its name).
func (s *scenario) statusSection(ctx context.Context, gid string) string {
	cm, err := s.kube.CoreV1().ConfigMaps("kube-system").Get(ctx, "cluster-autoscaler-status", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	st := cm.Data["status"]
	i := strings.Index(st, "\n  name: "+gid+"\n")
	if i < 0 {
		return ""
	}
	start := strings.LastIndex(st[:i], "\n- ")
	if start < 0 {
		start = 0
	}
	end := strings.Index(st[i+1:], "\n- ")
	if end < 0 {
		return st[start:]
	}
	return st[start : i+1+end]
}

// statusCounts reads a group's registered node counts from CA's status ConfigMap:
// health.nodeCounts.registered.{total,ready,notStarted,unready.total}.
func (s *scenario) statusCounts(ctx context.Context, gid string) map[string]int {
	out := map[string]int{}
	lines := strings.Split(s.statusSection(ctx, gid), "\n")
	indent := -1
	for _, l := range lines {
		if strings.Contains(l, "notStarted:") {
			indent = len(l) - len(strings.TrimLeft(l, " "))
		}
	}
	if indent < 0 {
		return out
	}
	inUnready := false
	for _, l := range lines {
		ind := len(l) - len(strings.TrimLeft(l, " "))
		k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		switch {
		case ind == indent && k == "unready":
			inUnready = true
		case ind == indent && err == nil:
			inUnready = false
			if k == "total" {
				k = "registered"
			}
			out[k] = n
		case ind > indent && inUnready && k == "total" && err == nil:
			out["unready"] = n
		case ind < indent:
			inUnready = false
		}
	}
	return out
}

// caRestartMidScaleUp: CA is restarted while its scale-up's execution waits in Cloudify's queue.
// The new CA must see the same target (from the provider, which counts the waiting execution),
// and Cloudify must get exactly one execution per IncreaseSize (see the note below on what CA
// 1.36 itself does after a restart).
func (s *scenario) caRestartMidScaleUp(ctx context.Context) error {
	s.tl.Phase("10 CA restart mid scale-up")
	if len(s.caRestart) == 0 {
		s.tl.Event("no --ca-restart command: skipped")
		return nil
	}
	if err := s.groupAt(ctx, s.pool, s.poolMin, 150*time.Second); err != nil { // from the previous phase
		return err
	}
	dep, _ := split(s.pool)
	mark := s.w.execCount()
	if err := s.cfy.faults(ctx, map[string]any{"hold_executions": true}); err != nil {
		return err
	}
	s.tl.Event("harness: simulator fault hold_executions=true (new executions wait in the queue)")
	if err := s.create(ctx, workload{name: "restart", replicas: 3, cpu: "900m", memory: "512Mi", selector: s.poolSel}); err != nil {
		return err
	}
	var first execution
	if err := s.waitFor(ctx, 90*time.Second, "cluster-autoscaler IncreaseSize (execution queued)", func() (bool, error) {
		for _, ex := range s.w.executionsSince(mark) {
			if ex.DeploymentID == dep && executionDelta(ex) > 0 {
				first = ex
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	s.tl.Event("cluster-autoscaler IncreaseSize -> %s (%s, held)", describeExec(first), first.Status)
	before := s.statusTarget(ctx, s.pool)
	off := s.caLog.mark()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	out, err := exec.CommandContext(cctx, s.caRestart[0], s.caRestart[1:]...).CombinedOutput()
	cancel()
	if err != nil {
		return stepErr{fmt.Sprintf("restarting CA: %v: %s", err, truncate(string(out), 300))}
	}
	s.tl.Event("harness: cluster-autoscaler restarted (%s)", strings.TrimSpace(truncate(string(out), 120)))
	// The new CA runs three loops with the execution still queued.
	if err := s.waitFor(ctx, 90*time.Second, "the restarted cluster-autoscaler runs 3 loops", func() (bool, error) {
		l, _ := s.caLinesContaining(off, "Starting main loop")
		return len(l) >= 3, nil
	}); err != nil {
		return err
	}
	// What the new CA saw: its own "Scale-up: setting group G size to N instead of M" names the
	// target it got from the provider (M). CA 1.36 ignores upcoming nodes for which this process
	// made no scale-up request (clusterstate GetUpcomingNodes), so a restarted CA scales up again
	// for pods whose nodes are still queued: that is CA's behaviour, recorded here; the provider's
	// part is to report the queued execution in the target and to start exactly one execution per
	// IncreaseSize.
	lines, _ := s.caLinesContaining(off, "Scale-up: setting group "+s.pool+" size to ")
	again := 0
	for _, l := range lines {
		m := regexp.MustCompile(`size to (\d+) instead of (\d+)`).FindStringSubmatch(l)
		if m == nil {
			continue
		}
		again++
		if seen, _ := strconv.Atoi(m[2]); seen != s.poolMin+1 {
			msg := fmt.Sprintf("the restarted CA saw target %d for %s, want %d (the queued scale-out): %s", seen, s.pool, s.poolMin+1, l)
			s.tl.Event("FAIL: %s", msg)
			return stepErr{msg}
		}
	}
	after := s.statusTarget(ctx, s.pool)
	s.tl.Event("cloudProviderTarget of %s in CA's status: %d before the restart, %d after 3 loops of the new CA; the new CA scaled up again %d time(s) (it saw target %d)", s.pool, before, after, again, s.poolMin+1)
	if after != s.poolMin+1+again {
		return stepErr{fmt.Sprintf("target %d after the restart, want %d (queued) + %d (new CA's scale-ups)", after, s.poolMin+1, again)}
	}
	if err := s.cfy.faults(ctx, map[string]any{"hold_executions": false}); err != nil {
		return err
	}
	s.tl.Event("harness: hold_executions=false (the queued execution runs)")
	if err := s.waitRunning(ctx, "restart", 3, 150*time.Second); err != nil {
		return err
	}
	var ups []string
	for _, ex := range s.w.executionsSince(mark) {
		if ex.DeploymentID == dep && executionDelta(ex) > 0 {
			ups = append(ups, describeExec(ex))
		}
	}
	if len(ups) != 1+again {
		msg := fmt.Sprintf("%d scale-out executions across the CA restart, want 1 + %d (one per IncreaseSize CA made): %v", len(ups), again, ups)
		s.tl.Event("FAIL: %s", msg)
		return stepErr{msg}
	}
	s.tl.Event("executions across the CA restart: %v (1 before, %d from the restarted CA)", ups, again)
	if err := scaleWorkloadToZero(ctx, s.kube, "restart"); err != nil {
		return err
	}
	return s.groupAt(ctx, s.pool, s.poolMin, 150*time.Second)
}

var statusTarget = regexp.MustCompile(`cloudProviderTarget:\s*(\d+)`)

// statusTarget is the cloudProviderTarget CA reports for a group in its status ConfigMap (-1 if
// absent).
func (s *scenario) statusTarget(ctx context.Context, gid string) int {
	m := statusTarget.FindStringSubmatch(s.statusSection(ctx, gid))
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
