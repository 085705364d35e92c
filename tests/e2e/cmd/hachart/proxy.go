package main

// The kube-proxy stand-in of the gRPC Service: it forwards each new TCP connection to a ready
// endpoint of the Service's EndpointSlices. The slices are kube-controller-manager's (its
// EndpointSlice controller matches the Service's selector, here the leader label, against the
// pods and their Ready condition); this program only reads them and maps a pod IP to the local
// port of that pod's process.

import (
	"context"
	"io"
	"net"
	"sort"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

type proxy struct {
	kube      kubernetes.Interface
	namespace string
	service   string
	port      string
	addrFor   func(ip string) (string, bool)
	logf      func(format string, a ...any)
	mu        sync.Mutex
	ready     []string // pod IPs
}

func (x *proxy) listen(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go x.follow(ctx)
	go func() { <-ctx.Done(); l.Close() }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go x.forward(c)
		}
	}()
	x.logf("proxy: Service %s/%s on %s", x.namespace, x.service, addr)
	return nil
}

// follow keeps the ready endpoint IPs of the Service's EndpointSlices.
func (x *proxy) follow(ctx context.Context) {
	var last []string
	for ctx.Err() == nil {
		l, err := x.kube.DiscoveryV1().EndpointSlices(x.namespace).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + x.service})
		if err == nil {
			var ips []string
			for _, s := range l.Items {
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && !*e.Conditions.Ready {
						continue
					}
					ips = append(ips, e.Addresses...)
				}
			}
			sort.Strings(ips)
			if !equal(ips, last) {
				x.logf("proxy: endpoints of %s: %v", x.service, ips)
				last = ips
			}
			x.mu.Lock()
			x.ready = ips
			x.mu.Unlock()
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (x *proxy) forward(in net.Conn) {
	defer in.Close()
	x.mu.Lock()
	ips := append([]string(nil), x.ready...)
	x.mu.Unlock()
	for _, ip := range ips {
		addr, ok := x.addrFor(ip)
		if !ok {
			continue
		}
		out, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			continue
		}
		defer out.Close()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
		go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
		<-done
		return
	}
	// No ready endpoint: the connection is refused, as with a Service without endpoints.
}
