package caclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	apiv1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	pb "autoscaler-cloudify/tests/ca-conformance/internal/wire"
)

const (
	// ServicePrefix is the full gRPC service name every RPC path starts with.
	ServicePrefix      = "/clusterautoscaler.cloudprovider.v1.externalgrpc.CloudProvider/"
	defaultGRPCTimeout = 5 * time.Second
)

// CloudConfig is CA's externalgrpc cloud-config file (parsed with sigs.k8s.io/yaml, JSON tags,
// unknown keys ignored).
type CloudConfig struct {
	Address     string          `json:"address"`
	Key         string          `json:"key"`
	Cert        string          `json:"cert"`
	Cacert      string          `json:"cacert"`
	GRPCTimeout metav1.Duration `json:"grpc_timeout"`
}

// Calls counts RPCs per method name; the tests use it to show coverage.
type Calls struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *Calls) add(m string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[m]++
}

// Snapshot returns a copy of the counters.
func (c *Calls) Snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// Logger receives one line per RPC (method, error) like CA's -v=5 log.
var Logger = log.New(io.Discard, "", 0)

type rpcClient struct {
	conn    *grpc.ClientConn
	timeout time.Duration
	calls   *Calls
}

// invoke runs one unary RPC with CA's per-call deadline (context.WithTimeout(Background, grpcTimeout)).
func (c *rpcClient) invoke(method string, req, resp any) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	c.calls.add(method)
	err := c.conn.Invoke(ctx, ServicePrefix+method, req, resp)
	Logger.Printf("rpc %s err=%v", method, err)
	return err
}

// ExternalGrpcCloudProvider mirrors externalgrpc.externalGrpcCloudProvider.
type ExternalGrpcCloudProvider struct {
	client *rpcClient
	Calls  *Calls

	mutex                  sync.Mutex
	nodeGroupsCache        []NodeGroup
	nodeGroupForNodeCache  map[string]NodeGroup
	gpuLabelCache          *string
	availableGPUTypesCache map[string]struct{}
}

// BuildFromCloudConfigFile mirrors BuildExternalGrpc: read the cloud-config file, dial, build.
func BuildFromCloudConfigFile(path string) (*ExternalGrpcCloudProvider, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("couldn't open cloud provider configuration %s: %w", path, err)
	}
	var cc CloudConfig
	if err := yaml.Unmarshal(raw, &cc); err != nil {
		return nil, fmt.Errorf("can't parse YAML: %w", err)
	}
	return Build(cc)
}

// Build dials like CA's getConnection and returns the provider.
func Build(cc CloudConfig) (*ExternalGrpcCloudProvider, error) {
	timeout := cc.GRPCTimeout.Duration
	if timeout == 0 {
		timeout = defaultGRPCTimeout
	}
	host, _, err := net.SplitHostPort(cc.Address)
	if err != nil {
		return nil, fmt.Errorf("failed to extract host from address %q: %w", cc.Address, err)
	}
	var creds grpc.DialOption
	if cc.Cert == "" {
		creds = grpc.WithTransportCredentials(insecure.NewCredentials())
	} else {
		certificate, err := tls.LoadX509KeyPair(cc.Cert, cc.Key)
		if err != nil {
			return nil, fmt.Errorf("failed to read certificate files: %w", err)
		}
		pool := x509.NewCertPool()
		caPEM, err := os.ReadFile(cc.Cacert)
		if err != nil {
			return nil, fmt.Errorf("failed to read ca certificate: %w", err)
		}
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("failed to append ca certificate")
		}
		creds = grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			ServerName:   host,
			Certificates: []tls.Certificate{certificate},
			RootCAs:      pool,
		}))
	}
	//nolint:staticcheck // CA itself uses grpc.Dial (non-blocking, passthrough resolver).
	conn, err := grpc.Dial(cc.Address, creds)
	if err != nil {
		return nil, fmt.Errorf("could not dial %s: %w", cc.Address, err)
	}
	calls := &Calls{}
	return &ExternalGrpcCloudProvider{
		client:                &rpcClient{conn: conn, timeout: timeout, calls: calls},
		Calls:                 calls,
		nodeGroupForNodeCache: map[string]NodeGroup{},
	}, nil
}

// Close closes the connection (not part of CA's interface; test hygiene).
func (e *ExternalGrpcCloudProvider) Close() error { return e.client.conn.Close() }

// Name returns "externalgrpc".
func (e *ExternalGrpcCloudProvider) Name() string { return "externalgrpc" }

// NodeGroups: cached until Refresh; on error logs and returns an empty list (not cached).
func (e *ExternalGrpcCloudProvider) NodeGroups() []NodeGroup {
	e.mutex.Lock()
	defer e.mutex.Unlock()
	if e.nodeGroupsCache != nil {
		return e.nodeGroupsCache
	}
	res := &pb.NodeGroupsResponse{}
	if err := e.client.invoke("NodeGroups", &pb.NodeGroupsRequest{}, res); err != nil {
		return []NodeGroup{}
	}
	out := make([]NodeGroup, 0, len(res.GetNodeGroups()))
	for _, g := range res.GetNodeGroups() {
		out = append(out, e.newNodeGroup(g))
	}
	e.nodeGroupsCache = out
	return out
}

func (e *ExternalGrpcCloudProvider) newNodeGroup(g *pb.NodeGroup) *ExternalGrpcNodeGroup {
	return &ExternalGrpcNodeGroup{
		id: g.GetId(), minSize: int(g.GetMinSize()), maxSize: int(g.GetMaxSize()), debug: g.GetDebug(),
		client: e.client,
	}
}

func externalGrpcNode(n *apiv1.Node) *pb.ExternalGrpcNode {
	return &pb.ExternalGrpcNode{
		ProviderID:  n.Spec.ProviderID,
		Name:        n.Name,
		Labels:      n.Labels,
		Annotations: n.Annotations,
	}
}

// NodeGroupForNode: answers with a group are cached (key name+providerID) until Refresh;
// "no group" (id "") is returned as (nil, nil) and never cached.
func (e *ExternalGrpcCloudProvider) NodeGroupForNode(node *apiv1.Node) (NodeGroup, error) {
	if node == nil {
		return nil, fmt.Errorf("node cannot be nil")
	}
	e.mutex.Lock()
	defer e.mutex.Unlock()
	key := node.Name + node.Spec.ProviderID
	if ng, ok := e.nodeGroupForNodeCache[key]; ok {
		return ng, nil
	}
	res := &pb.NodeGroupForNodeResponse{}
	if err := e.client.invoke("NodeGroupForNode", &pb.NodeGroupForNodeRequest{Node: externalGrpcNode(node)}, res); err != nil {
		return nil, err
	}
	g := res.GetNodeGroup()
	if g.GetId() == "" {
		return nil, nil
	}
	ng := e.newNodeGroup(g)
	e.nodeGroupForNodeCache[key] = ng
	return ng, nil
}

// HasInstance is not implemented by the externalgrpc provider.
func (e *ExternalGrpcCloudProvider) HasInstance(*apiv1.Node) (bool, error) {
	return true, ErrNotImplemented
}

// Pricing always returns the model; errors surface per call.
func (e *ExternalGrpcCloudProvider) Pricing() (PricingModel, error) {
	return &pricingModel{client: e.client}, nil
}

// GPULabel: first successful answer kept forever; an error gives "".
func (e *ExternalGrpcCloudProvider) GPULabel() string {
	e.mutex.Lock()
	defer e.mutex.Unlock()
	if e.gpuLabelCache != nil {
		return *e.gpuLabelCache
	}
	res := &pb.GPULabelResponse{}
	if err := e.client.invoke("GPULabel", &pb.GPULabelRequest{}, res); err != nil {
		return ""
	}
	l := res.GetLabel()
	e.gpuLabelCache = &l
	return l
}

// GetAvailableGPUTypes: keys of the answer's map; cached forever; error gives nil.
func (e *ExternalGrpcCloudProvider) GetAvailableGPUTypes() map[string]struct{} {
	e.mutex.Lock()
	defer e.mutex.Unlock()
	if e.availableGPUTypesCache != nil {
		return e.availableGPUTypesCache
	}
	res := &pb.GetAvailableGPUTypesResponse{}
	if err := e.client.invoke("GetAvailableGPUTypes", &pb.GetAvailableGPUTypesRequest{}, res); err != nil {
		return nil
	}
	out := make(map[string]struct{})
	for k := range res.GetGpuTypes() {
		out[k] = struct{}{}
	}
	e.availableGPUTypesCache = out
	return out
}

// Cleanup calls the Cleanup RPC (CA does this at exit).
func (e *ExternalGrpcCloudProvider) Cleanup() error {
	return e.client.invoke("Cleanup", &pb.CleanupRequest{}, &pb.CleanupResponse{})
}

// Refresh wipes the NodeGroups and NodeGroupForNode caches, then calls the Refresh RPC.
func (e *ExternalGrpcCloudProvider) Refresh() error {
	e.mutex.Lock()
	e.nodeGroupsCache = nil
	e.nodeGroupForNodeCache = map[string]NodeGroup{}
	e.mutex.Unlock()
	return e.client.invoke("Refresh", &pb.RefreshRequest{}, &pb.RefreshResponse{})
}

type pricingModel struct{ client *rpcClient }

func notImplemented(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unimplemented {
		return ErrNotImplemented
	}
	return err
}

func (p *pricingModel) NodePrice(node *apiv1.Node, start, end time.Time) (float64, error) {
	res := &pb.PricingNodePriceResponse{}
	err := p.client.invoke("PricingNodePrice", &pb.PricingNodePriceRequest{
		Node:           externalGrpcNode(node),
		StartTimestamp: timestamppb.New(start),
		EndTimestamp:   timestamppb.New(end),
	}, res)
	if err != nil {
		return 0, notImplemented(err)
	}
	return res.GetPrice(), nil
}

func (p *pricingModel) PodPrice(pod *apiv1.Pod, start, end time.Time) (float64, error) {
	podBytes, err := pod.Marshal()
	if err != nil {
		return 0, err
	}
	res := &pb.PricingPodPriceResponse{}
	err = p.client.invoke("PricingPodPrice", &pb.PricingPodPriceRequest{
		PodBytes:       podBytes,
		StartTimestamp: timestamppb.New(start),
		EndTimestamp:   timestamppb.New(end),
	}, res)
	if err != nil {
		return 0, notImplemented(err)
	}
	return res.GetPrice(), nil
}

// BuildTLSWithoutClientCert dials like CA's TLS branch but presents no client certificate
// (only for the negative mTLS test; CA's cloud-config cannot express this).
func BuildTLSWithoutClientCert(address, cacert string) (*ExternalGrpcCloudProvider, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(cacert)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(caPEM)
	//nolint:staticcheck // same dial as CA
	conn, err := grpc.Dial(address, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{ServerName: host, RootCAs: pool})))
	if err != nil {
		return nil, err
	}
	calls := &Calls{}
	return &ExternalGrpcCloudProvider{
		client:                &rpcClient{conn: conn, timeout: 5 * time.Second, calls: calls},
		Calls:                 calls,
		nodeGroupForNodeCache: map[string]NodeGroup{},
	}, nil
}
