package main

// The podlet: the kubelet and container runtime of the provider's pods, on the host. It runs one
// `autoscaler-cloudify serve` process per provider Pod bound to one of its Nodes, built from the
// Pod as the API server has it (args, env with downward-API fields and Secret keys, ConfigMap and
// Secret volumes written to a directory per pod, the ServiceAccount stand-in as KUBECONFIG),
// reports the Pod's status (phase, podIP, Ready from the pod's own readinessProbe against the
// process's HTTP port), and ends a deleted Pod as a kubelet does: SIGTERM, the grace period, then
// SIGKILL, and finally the Pod object's removal.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

type podlet struct {
	kube      kubernetes.Interface
	namespace string
	selector  string // label selector of the pods it runs
	nodeLabel string // key=value of the Nodes it plays
	provider  string // the binary (the image's ENTRYPOINT is `/autoscaler-cloudify serve`)
	saKubecfg string // stands in for the mounted ServiceAccount token
	workdir   string
	mu        sync.Mutex
	pods      map[types.UID]*runningPod
	nextIP    int
	logf      func(format string, a ...any)
}

type runningPod struct {
	name      string
	uid       types.UID
	node      string
	ip        string
	grpcAddr  string
	httpAddr  string
	cmd       *exec.Cmd
	exited    chan struct{}
	ready     bool
	fails     int
	lastProbe time.Time
	stopping  bool
}

// addrFor answers the kube-proxy stand-in: the local gRPC address of the pod with this IP.
func (p *podlet) addrFor(ip string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rp := range p.pods {
		if rp.ip == ip && !rp.stopping {
			return rp.grpcAddr, true
		}
	}
	return "", false
}

func (p *podlet) ourNodes(ctx context.Context) (map[string]bool, error) {
	l, err := p.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: p.nodeLabel})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, n := range l.Items {
		out[n.Name] = true
	}
	return out, nil
}

func (p *podlet) run(ctx context.Context) {
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			p.stopAll()
			return
		case <-tick.C:
		}
		if err := p.sync(ctx); err != nil {
			p.logf("podlet: %v", err)
		}
	}
}

func (p *podlet) sync(ctx context.Context) error {
	nodes, err := p.ourNodes(ctx)
	if err != nil {
		return err
	}
	l, err := p.kube.CoreV1().Pods(p.namespace).List(ctx, metav1.ListOptions{LabelSelector: p.selector})
	if err != nil {
		return err
	}
	seen := map[types.UID]bool{}
	for i := range l.Items {
		pod := &l.Items[i]
		if !nodes[pod.Spec.NodeName] {
			continue
		}
		seen[pod.UID] = true
		p.mu.Lock()
		rp := p.pods[pod.UID]
		p.mu.Unlock()
		switch {
		case rp == nil && pod.DeletionTimestamp == nil:
			rp, err = p.start(ctx, pod)
			if err != nil {
				p.logf("podlet: start %s: %v", pod.Name, err)
				continue
			}
			p.report(ctx, pod, rp)
		case rp == nil:
			p.forget(ctx, pod)
		case pod.DeletionTimestamp != nil && !rp.stopping:
			rp.stopping = true
			go p.terminate(ctx, pod, rp)
		case !rp.stopping:
			p.probe(ctx, pod, rp)
		}
	}
	// Pods removed behind its back (force deletion): stop their processes.
	p.mu.Lock()
	for uid, rp := range p.pods {
		if !seen[uid] && !rp.stopping {
			rp.stopping = true
			go p.kill(rp, 5*time.Second)
		}
	}
	p.mu.Unlock()
	return nil
}

var listenRe = regexp.MustCompile(`(?m)^(\s*listen:\s*)"[^"]*:(\d+)"`)

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// start materializes the pod's volumes, env and args, and runs the provider.
func (p *podlet) start(ctx context.Context, pod *corev1.Pod) (*runningPod, error) {
	if len(pod.Spec.Containers) != 1 {
		return nil, fmt.Errorf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	dir := filepath.Join(p.workdir, "pods", pod.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Volumes: one directory each.
	volDir := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		d := filepath.Join(dir, "volumes", v.Name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		volDir[v.Name] = d
		switch {
		case v.ConfigMap != nil:
			cm, err := p.kube.CoreV1().ConfigMaps(p.namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			for k, val := range cm.Data {
				if err := os.WriteFile(filepath.Join(d, k), []byte(val), 0o644); err != nil {
					return nil, err
				}
			}
		case v.Secret != nil:
			s, err := p.kube.CoreV1().Secrets(p.namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			for k, val := range s.Data {
				if err := os.WriteFile(filepath.Join(d, k), val, 0o600); err != nil {
					return nil, err
				}
			}
		}
	}
	// Mount paths, longest first, become the volume directories in args and in files.
	type mount struct{ path, dir string }
	var mounts []mount
	for _, m := range c.VolumeMounts {
		mounts = append(mounts, mount{m.MountPath, volDir[m.Name]})
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].path) > len(mounts[j].path) })
	rewrite := func(s string) string {
		for _, m := range mounts {
			s = strings.ReplaceAll(s, m.path, m.dir)
		}
		return s
	}
	grpcAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	ports := map[string]string{}
	for _, cp := range c.Ports {
		switch cp.Name {
		case "grpc":
			ports[fmt.Sprint(cp.ContainerPort)] = grpcAddr
		case "http":
			ports[fmt.Sprint(cp.ContainerPort)] = httpAddr
		}
	}
	for _, m := range mounts {
		entries, _ := os.ReadDir(m.dir)
		for _, e := range entries {
			f := filepath.Join(m.dir, e.Name())
			b, err := os.ReadFile(f)
			if err != nil || !strings.HasSuffix(e.Name(), ".yaml") {
				continue
			}
			// The pod's network namespace is the host's here: each container port gets a free
			// loopback port (the chart's `[::]:8086` would collide between pods).
			text := listenRe.ReplaceAllStringFunc(rewrite(string(b)), func(line string) string {
				sub := listenRe.FindStringSubmatch(line)
				if a, ok := ports[sub[2]]; ok {
					return sub[1] + `"` + a + `"`
				}
				return line
			})
			if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
				return nil, err
			}
		}
	}
	p.mu.Lock()
	p.nextIP++
	ip := fmt.Sprintf("10.244.%d.%d", p.nextIP/250, p.nextIP%250+1)
	p.mu.Unlock()
	env := []string{"PATH=" + os.Getenv("PATH"), "KUBECONFIG=" + p.saKubecfg, "NO_COLOR=1", "HOME=" + dir}
	for _, e := range c.Env {
		val := e.Value
		if e.ValueFrom != nil {
			switch {
			case e.ValueFrom.FieldRef != nil:
				switch e.ValueFrom.FieldRef.FieldPath {
				case "metadata.name":
					val = pod.Name
				case "metadata.namespace":
					val = pod.Namespace
				case "status.podIP":
					val = ip
				}
			case e.ValueFrom.SecretKeyRef != nil:
				ref := e.ValueFrom.SecretKeyRef
				s, err := p.kube.CoreV1().Secrets(p.namespace).Get(ctx, ref.Name, metav1.GetOptions{})
				if err != nil && !(apierrors.IsNotFound(err) && ref.Optional != nil && *ref.Optional) {
					return nil, fmt.Errorf("env %s: %w", e.Name, err)
				}
				if s == nil || s.Data[ref.Key] == nil {
					continue
				}
				val = string(s.Data[ref.Key])
			}
		}
		env = append(env, e.Name+"="+val)
	}
	args := []string{"serve"}
	for _, a := range c.Args {
		args = append(args, rewrite(a))
	}
	logf, err := os.Create(filepath.Join(p.workdir, "logs", "provider-"+pod.Name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(p.provider, args...)
	cmd.Env, cmd.Stdout, cmd.Stderr, cmd.Dir = env, logf, logf, dir
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	rp := &runningPod{name: pod.Name, uid: pod.UID, node: pod.Spec.NodeName, ip: ip, grpcAddr: grpcAddr,
		httpAddr: httpAddr, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(rp.exited) }()
	p.mu.Lock()
	p.pods[pod.UID] = rp
	p.mu.Unlock()
	p.logf("podlet: started %s on %s (ip %s, grpc %s, http %s, pid %d)", pod.Name, pod.Spec.NodeName, ip, grpcAddr, httpAddr, cmd.Process.Pid)
	return rp, nil
}

// probe runs the pod's readinessProbe (HTTP GET on the named port) at its period and reports a
// change of Ready.
func (p *podlet) probe(ctx context.Context, pod *corev1.Pod, rp *runningPod) {
	pr := pod.Spec.Containers[0].ReadinessProbe
	period, threshold := 10*time.Second, 3
	if pr != nil {
		if pr.PeriodSeconds > 0 {
			period = time.Duration(pr.PeriodSeconds) * time.Second
		}
		if pr.FailureThreshold > 0 {
			threshold = int(pr.FailureThreshold)
		}
	}
	select {
	case <-rp.exited:
		p.logf("podlet: %s exited unexpectedly", pod.Name)
		rp.ready = false
		p.report(ctx, pod, rp)
		return
	default:
	}
	if time.Since(rp.lastProbe) < period {
		if podReady(pod) != rp.ready {
			p.report(ctx, pod, rp)
		}
		return
	}
	rp.lastProbe = time.Now()
	ok := false
	if pr != nil && pr.HTTPGet != nil {
		cl := http.Client{Timeout: time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second}
		if resp, err := cl.Get("http://" + rp.httpAddr + pr.HTTPGet.Path); err == nil {
			ok = resp.StatusCode >= 200 && resp.StatusCode < 400
			resp.Body.Close()
		}
	}
	was := rp.ready
	if ok {
		rp.ready, rp.fails = true, 0
	} else if rp.fails++; rp.fails >= threshold {
		rp.ready = false
	}
	if was != rp.ready || podReady(pod) != rp.ready {
		p.report(ctx, pod, rp)
	}
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// report writes the pod's status as a kubelet would.
func (p *podlet) report(ctx context.Context, pod *corev1.Pod, rp *runningPod) {
	cur, err := p.kube.CoreV1().Pods(p.namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil || cur.UID != rp.uid {
		return
	}
	now := metav1.Now()
	status := func(b bool) corev1.ConditionStatus {
		if b {
			return corev1.ConditionTrue
		}
		return corev1.ConditionFalse
	}
	start := cur.Status.StartTime
	if start == nil {
		start = &now
	}
	running := true
	select {
	case <-rp.exited:
		running = false
	default:
	}
	cur.Status.Phase = corev1.PodRunning
	cur.Status.HostIP = "10.0.0.1"
	cur.Status.PodIP = rp.ip
	cur.Status.PodIPs = []corev1.PodIP{{IP: rp.ip}}
	cur.Status.StartTime = start
	cur.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: status(rp.ready), LastTransitionTime: now},
		{Type: corev1.PodReady, Status: status(rp.ready), LastTransitionTime: now},
	}
	cs := corev1.ContainerStatus{Name: pod.Spec.Containers[0].Name, Image: pod.Spec.Containers[0].Image,
		Ready: rp.ready, Started: &running}
	if running {
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: *start}
	} else {
		cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}
	}
	cur.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
	if _, err := p.kube.CoreV1().Pods(p.namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		p.logf("podlet: status of %s: %v", pod.Name, err)
		return
	}
	p.logf("podlet: %s Ready=%v", pod.Name, rp.ready)
}

// terminate ends a deleted pod: SIGTERM, the pod's grace period, SIGKILL, then the Pod object.
func (p *podlet) terminate(ctx context.Context, pod *corev1.Pod, rp *runningPod) {
	grace := 30 * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	t0 := time.Now()
	p.kill(rp, grace)
	p.logf("podlet: %s stopped %.1fs after its deletion was seen", pod.Name, time.Since(t0).Seconds())
	p.forget(ctx, pod)
}

func (p *podlet) kill(rp *runningPod, grace time.Duration) {
	_ = rp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-rp.exited:
	case <-time.After(grace):
		_ = rp.cmd.Process.Kill()
		<-rp.exited
	}
}

func (p *podlet) forget(ctx context.Context, pod *corev1.Pod) {
	zero := int64(0)
	uid := pod.UID
	err := p.kube.CoreV1().Pods(p.namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		p.logf("podlet: delete %s: %v", pod.Name, err)
	}
	p.mu.Lock()
	delete(p.pods, pod.UID)
	p.mu.Unlock()
}

func (p *podlet) stopAll() {
	p.mu.Lock()
	var all []*runningPod
	for _, rp := range p.pods {
		all = append(all, rp)
	}
	p.mu.Unlock()
	for _, rp := range all {
		p.kill(rp, 5*time.Second)
	}
}
