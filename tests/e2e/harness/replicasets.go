package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// rsController is the harness's stand-in for the ReplicaSet controller (there is no
// kube-controller-manager): it keeps `replicas` live pods of every workload the harness created,
// so a pod that CA evicts while draining a node gets a replacement, as in a real cluster.
type rsController struct {
	mu   sync.Mutex
	sets map[string]*trackedRS
}

type trackedRS struct {
	labels   map[string]string
	owner    []metav1.OwnerReference
	spec     corev1.PodSpec
	replicas int
	next     int // suffix of the next pod name
}

var replicaSets = &rsController{sets: map[string]*trackedRS{}}

func (c *rsController) track(name string, labels map[string]string, owner []metav1.OwnerReference, spec corev1.PodSpec, replicas int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sets[name] = &trackedRS{labels: labels, owner: owner, spec: spec, replicas: replicas}
}

func (c *rsController) setReplicas(name string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rs, ok := c.sets[name]; ok {
		rs.replicas = n
	}
}

func (c *rsController) createPod(ctx context.Context, kube kubernetes.Interface, name string) error {
	c.mu.Lock()
	rs, ok := c.sets[name]
	if !ok {
		c.mu.Unlock()
		return fmt.Errorf("workload %s is not tracked", name)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, rs.next), Namespace: ns, Labels: rs.labels, OwnerReferences: rs.owner},
		Spec:       *rs.spec.DeepCopy(),
	}
	rs.next++
	c.mu.Unlock()
	if _, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create pod %s: %w", pod.Name, err)
	}
	return nil
}

// run replaces missing pods every 500 ms (a pod being deleted no longer counts, as in the real
// controller).
func (c *rsController) run(ctx context.Context, kube kubernetes.Interface, tl *Timeline) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		c.mu.Lock()
		want := map[string]int{}
		for name, rs := range c.sets {
			want[name] = rs.replicas
		}
		c.mu.Unlock()
		names := make([]string, 0, len(want))
		for n := range want {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			if want[name] == 0 {
				continue
			}
			pods, err := podsOf(ctx, kube, name)
			if err != nil {
				continue
			}
			live := 0
			for _, p := range pods {
				if p.DeletionTimestamp == nil {
					live++
				}
			}
			for i := live; i < want[name]; i++ {
				if err := c.createPod(ctx, kube, name); err == nil {
					tl.Event("replicaset controller (harness): %s has %d/%d live pods, created a replacement", name, live, want[name])
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
