// Command hachart stands in for what the HA chart tier (tests/e2e/ha-chart.sh) cannot run here:
// the kubelet and container runtime of the provider's pods (podlet.go: each provider Pod the real
// controllers create becomes an `autoscaler-cloudify serve` process on the host, its readiness
// mirrored into the Pod's status), kube-proxy for the gRPC Service (proxy.go: connections go to the
// ready endpoints of the Service's EndpointSlices, as kube-controller-manager's EndpointSlice
// controller computes them from the Service's selector), and the pending-pod waves that keep
// cluster-autoscaler scaling during a rollout and a drain (waves.go).
//
//	hachart podlet --kubeconfig K --sa-kubeconfig SA --provider BIN --workdir D --front 127.0.0.1:P
//	hachart waves  --kubeconfig K --cloudify-url U --deployment D --group G --count N --every 8s
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
}

func client(kubeconfig string) kubernetes.Interface {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		logf("hachart: %v", err)
		os.Exit(2)
	}
	rc.QPS, rc.Burst = 50, 100
	return kubernetes.NewForConfigOrDie(rc)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hachart podlet|waves [flags]")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig")
	namespace := fs.String("namespace", "kube-system", "the release namespace")
	switch os.Args[1] {
	case "podlet":
		sa := fs.String("sa-kubeconfig", "", "kubeconfig of the chart's ServiceAccount (stands in for the mounted token)")
		provider := fs.String("provider", "", "the autoscaler-cloudify binary")
		workdir := fs.String("workdir", "", "directory for pod files and logs")
		selector := fs.String("selector", "app.kubernetes.io/name=autoscaler-cloudify,app.kubernetes.io/component=provider", "pods to run")
		nodes := fs.String("node-label", "ha-chart.autoscaler-cloudify/role=system", "Nodes whose pods it runs")
		front := fs.String("front", "", "listen address of the gRPC Service stand-in")
		service := fs.String("service", "autoscaler-cloudify", "the gRPC Service")
		_ = fs.Parse(os.Args[2:])
		kube := client(*kubeconfig)
		_ = os.MkdirAll(*workdir+"/logs", 0o755)
		p := &podlet{kube: kube, namespace: *namespace, selector: *selector, nodeLabel: *nodes, provider: *provider,
			saKubecfg: *sa, workdir: *workdir, pods: map[types.UID]*runningPod{}, logf: logf}
		if *front != "" {
			px := &proxy{kube: kube, namespace: *namespace, service: *service, port: "grpc", addrFor: p.addrFor, logf: logf}
			if err := px.listen(ctx, *front); err != nil {
				logf("hachart: %v", err)
				os.Exit(1)
			}
		}
		p.run(ctx)
	case "waves":
		w := &waves{}
		fs.StringVar(&w.cloudify, "cloudify-url", "", "simulator URL")
		fs.StringVar(&w.deployment, "deployment", "", "deployment of the scaled group")
		fs.StringVar(&w.group, "group", "workers", "scaling group")
		fs.StringVar(&w.nodeSelector, "node-selector", "", "key=value the wave pods select (the group's template label)")
		fs.StringVar(&w.cpu, "cpu", "1500m", "CPU request of a wave pod (one pod per node)")
		fs.IntVar(&w.count, "count", 6, "number of waves")
		fs.IntVar(&w.first, "first", 1, "number of the first wave (its ReplicaSet is wave-N)")
		fs.DurationVar(&w.every, "every", 8*time.Second, "time between waves")
		fs.DurationVar(&w.timeout, "timeout", 90*time.Second, "how long the last wave may wait for its scale-up")
		fs.StringVar(&w.stopFile, "stop-file", "", "stop creating waves once this file exists")
		_ = fs.Parse(os.Args[2:])
		w.kube = client(*kubeconfig)
		os.Exit(w.run(ctx))
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
