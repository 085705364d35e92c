package main

// Waves of pending pods that keep cluster-autoscaler scaling while the provider's Deployment
// rolls and its leader's Node drains: every `every`, a ReplicaSet (the real ReplicaSet controller
// makes its pod) with one pod that needs a node of its own from the scaled group. Each wave must
// reach Cloudify as one scale-out: CA's IncreaseSize of +1 through the gRPC Service, whichever
// replica leads at that moment. A failed IncreaseSize would back the group off for 5 minutes
// (CA's default) and the waves after it would not be scaled in time.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

type waves struct {
	kube                        kubernetes.Interface
	cloudify, deployment, group string
	nodeSelector, cpu, stopFile string
	count, first                int
	every, timeout              time.Duration
}

type scaleExecution struct {
	CreatedAt  string         `json:"created_at"`
	Status     string         `json:"status"`
	Parameters map[string]any `json:"parameters"`
}

// scaleOuts lists the deployment's scale executions with a positive delta, oldest first.
func (w *waves) scaleOuts(ctx context.Context) ([]scaleExecution, error) {
	q := url.Values{"deployment_id": {w.deployment}, "workflow_id": {"scale"}, "_size": {"1000"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(w.cloudify, "/")+"/api/v3.1/executions?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth("admin", "admin")
	req.Header.Set("Tenant", "default_tenant")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var page struct {
		Items []scaleExecution `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		return nil, err
	}
	var out []scaleExecution
	for _, e := range page.Items {
		if d, ok := e.Parameters["delta"].(float64); ok && d > 0 {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt < out[j].CreatedAt })
	return out, nil
}

func (w *waves) create(ctx context.Context, i int) error {
	name := fmt.Sprintf("wave-%d", i)
	labels := map[string]string{"app": name}
	k, v, _ := strings.Cut(w.nodeSelector, "=")
	grace := int64(1)
	one := int32(1)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{k: v},
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/ha-chart/pause:1",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse(w.cpu), corev1.ResourceMemory: resource.MustParse("64Mi")}}}},
				},
			},
		},
	}
	_, err := w.kube.AppsV1().ReplicaSets("default").Create(ctx, rs, metav1.CreateOptions{})
	return err
}

func (w *waves) run(ctx context.Context) int {
	var created []time.Time
	t0 := time.Now()
	for i := 1; i <= w.count; i++ {
		if w.stopFile != "" {
			if _, err := os.Stat(w.stopFile); err == nil {
				break
			}
		}
		if err := w.create(ctx, w.first+i-1); err != nil {
			logf("waves: wave %d: %v", i, err)
			return 1
		}
		created = append(created, time.Now())
		logf("waves: wave %d created (+%.0fs)", i, time.Since(t0).Seconds())
		if i < w.count {
			select {
			case <-ctx.Done():
				return 1
			case <-time.After(w.every):
			}
		}
	}
	n := len(created)
	n += w.first - 1 // earlier waves' scale-outs are in Cloudify too
	deadline := time.Now().Add(w.timeout)
	var outs []scaleExecution
	for {
		var err error
		outs, err = w.scaleOuts(ctx)
		if err == nil && len(outs) >= n {
			break
		}
		if time.Now().After(deadline) {
			logf("waves: FAIL %d waves, %d scale-outs reached Cloudify within %s of the last wave (err %v)", n, len(outs), w.timeout, err)
			return 1
		}
		time.Sleep(500 * time.Millisecond)
	}
	worst := 0.0
	for i := w.first - 1; i < n; i++ {
		at, err := time.Parse(time.RFC3339Nano, strings.Replace(outs[i].CreatedAt, " ", "T", 1))
		lat := "?"
		if err == nil {
			d := at.Sub(created[i-w.first+1]).Seconds()
			lat = fmt.Sprintf("%.1fs", d)
			worst = max(worst, d)
		}
		logf("waves: wave %d: pod created -> CA's IncreaseSize in Cloudify %s", i+1, lat)
	}
	if len(outs) > n {
		logf("waves: FAIL %d scale-outs for %d waves: a call was repeated", len(outs), n)
		return 1
	}
	fmt.Printf("FIGURE ha-chart: %d waves, %d scale-outs, worst pending -> scale-out %.1fs\n", n, len(outs), worst)
	return 0
}
