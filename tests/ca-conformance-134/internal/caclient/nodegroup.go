package caclient

import (
	"fmt"
	"sync"

	"time"

	apiv1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pb "autoscaler-cloudify/tests/ca-conformance-134/internal/wire"
)

// ExternalGrpcNodeGroup mirrors externalgrpc.NodeGroup: id/min/max/debug are frozen from the
// NodeGroups (or NodeGroupForNode) answer; the template is cached per object.
type ExternalGrpcNodeGroup struct {
	id      string
	minSize int
	maxSize int
	debug   string
	client  *rpcClient

	mutex    sync.Mutex
	nodeInfo **NodeInfo
}

func (n *ExternalGrpcNodeGroup) MaxSize() int  { return n.maxSize }
func (n *ExternalGrpcNodeGroup) MinSize() int  { return n.minSize }
func (n *ExternalGrpcNodeGroup) Id() string    { return n.id }
func (n *ExternalGrpcNodeGroup) Debug() string { return n.debug }
func (n *ExternalGrpcNodeGroup) Exist() bool   { return true }

func (n *ExternalGrpcNodeGroup) Autoprovisioned() bool { return false }

func (n *ExternalGrpcNodeGroup) TargetSize() (int, error) {
	res := &pb.NodeGroupTargetSizeResponse{}
	if err := n.client.invoke("NodeGroupTargetSize", &pb.NodeGroupTargetSizeRequest{Id: n.id}, res); err != nil {
		return 0, err
	}
	return int(res.GetTargetSize()), nil
}

func (n *ExternalGrpcNodeGroup) IncreaseSize(delta int) error {
	return n.client.invoke("NodeGroupIncreaseSize",
		&pb.NodeGroupIncreaseSizeRequest{Id: n.id, Delta: int32(delta)}, &pb.NodeGroupIncreaseSizeResponse{})
}

func (n *ExternalGrpcNodeGroup) AtomicIncreaseSize(int) error { return ErrNotImplemented }

func (n *ExternalGrpcNodeGroup) DeleteNodes(nodes []*apiv1.Node) error {
	pbNodes := make([]*pb.ExternalGrpcNode, 0, len(nodes))
	for _, node := range nodes {
		pbNodes = append(pbNodes, externalGrpcNode(node))
	}
	return n.client.invoke("NodeGroupDeleteNodes",
		&pb.NodeGroupDeleteNodesRequest{Id: n.id, Nodes: pbNodes}, &pb.NodeGroupDeleteNodesResponse{})
}

func (n *ExternalGrpcNodeGroup) ForceDeleteNodes([]*apiv1.Node) error { return ErrNotImplemented }

func (n *ExternalGrpcNodeGroup) DecreaseTargetSize(delta int) error {
	return n.client.invoke("NodeGroupDecreaseTargetSize",
		&pb.NodeGroupDecreaseTargetSizeRequest{Id: n.id, Delta: int32(delta)}, &pb.NodeGroupDecreaseTargetSizeResponse{})
}

// Nodes: state unspecified -> Status nil (errorInfo ignored); errorInfo kept only when errorCode != "".
func (n *ExternalGrpcNodeGroup) Nodes() ([]Instance, error) {
	res := &pb.NodeGroupNodesResponse{}
	if err := n.client.invoke("NodeGroupNodes", &pb.NodeGroupNodesRequest{Id: n.id}, res); err != nil {
		return nil, err
	}
	instances := make([]Instance, 0, len(res.GetInstances()))
	for _, p := range res.GetInstances() {
		inst := Instance{Id: p.GetId()}
		st := p.GetStatus()
		if st.GetInstanceState() != pb.InstanceStatus_unspecified {
			inst.Status = &InstanceStatus{State: InstanceState(st.GetInstanceState())}
			if ei := st.GetErrorInfo(); ei.GetErrorCode() != "" {
				inst.Status.ErrorInfo = &InstanceErrorInfo{
					ErrorClass:   InstanceErrorClass(ei.GetInstanceErrorClass()),
					ErrorCode:    ei.GetErrorCode(),
					ErrorMessage: ei.GetErrorMessage(),
				}
			}
		}
		instances = append(instances, inst)
	}
	return instances, nil
}

// TemplateNodeInfo (CA <= 1.34.1): UNIMPLEMENTED -> ErrNotImplemented; the Node is the embedded
// message in field 1 (nodeInfo), decoded by k8s.io/api v0.34.1; absent -> (nil, nil) (cached).
func (n *ExternalGrpcNodeGroup) TemplateNodeInfo() (*NodeInfo, error) {
	n.mutex.Lock()
	defer n.mutex.Unlock()
	if n.nodeInfo != nil {
		return *n.nodeInfo, nil
	}
	res := &pb.NodeGroupTemplateNodeInfoResponse{}
	if err := n.client.invoke("NodeGroupTemplateNodeInfo", &pb.NodeGroupTemplateNodeInfoRequest{Id: n.id}, res); err != nil {
		return nil, notImplemented(err)
	}
	if res.NodeInfo == nil {
		n.nodeInfo = new(*NodeInfo)
		return nil, nil
	}
	node := &apiv1.Node{}
	if err := node.Unmarshal(res.GetNodeInfo()); err != nil {
		return nil, fmt.Errorf("failed to unmarshal nodeInfo (field 1): %w", err)
	}
	ni := &NodeInfo{node: node}
	n.nodeInfo = &ni
	return ni, nil
}

// GetOptions (CA 1.34.1): defaults go out as k8s meta.v1.Duration in fields 3/4/5 (1.34.1 sends no
// 8/9/10); the answer is read from 3/4/5 only. Upstream dereferences the three duration
// pointers without a nil check, so an answer missing one of them panics CA 1.34.1: reported
// here as an error.
func (n *ExternalGrpcNodeGroup) GetOptions(defaults NodeGroupAutoscalingOptions) (*NodeGroupAutoscalingOptions, error) {
	res := &pb.NodeGroupAutoscalingOptionsResponse{}
	err := n.client.invoke("NodeGroupGetOptions", &pb.NodeGroupAutoscalingOptionsRequest{
		Id: n.id,
		Defaults: &pb.NodeGroupAutoscalingOptions{
			ScaleDownUtilizationThreshold:    defaults.ScaleDownUtilizationThreshold,
			ScaleDownGpuUtilizationThreshold: defaults.ScaleDownGpuUtilizationThreshold,
			ScaleDownUnneededTime:            metaDuration(defaults.ScaleDownUnneededTime),
			ScaleDownUnreadyTime:             metaDuration(defaults.ScaleDownUnreadyTime),
			MaxNodeProvisionTime:             metaDuration(defaults.MaxNodeProvisionTime),
			ZeroOrMaxNodeScaling:             defaults.ZeroOrMaxNodeScaling,
			IgnoreDaemonSetsUtilization:      defaults.IgnoreDaemonSetsUtilization,
		},
	}, res)
	if err != nil {
		return nil, notImplemented(err)
	}
	o := res.GetNodeGroupAutoscalingOptions()
	if o == nil {
		return nil, nil
	}
	unneeded, err := parseMetaDuration("scaleDownUnneededTime(3)", o.ScaleDownUnneededTime)
	if err != nil {
		return nil, err
	}
	unready, err := parseMetaDuration("scaleDownUnreadyTime(4)", o.ScaleDownUnreadyTime)
	if err != nil {
		return nil, err
	}
	provision, err := parseMetaDuration("MaxNodeProvisionTime(5)", o.MaxNodeProvisionTime)
	if err != nil {
		return nil, err
	}
	return &NodeGroupAutoscalingOptions{
		ScaleDownUtilizationThreshold:    o.GetScaleDownUtilizationThreshold(),
		ScaleDownGpuUtilizationThreshold: o.GetScaleDownGpuUtilizationThreshold(),
		ScaleDownUnneededTime:            unneeded,
		ScaleDownUnreadyTime:             unready,
		MaxNodeProvisionTime:             provision,
		ZeroOrMaxNodeScaling:             o.GetZeroOrMaxNodeScaling(),
		IgnoreDaemonSetsUtilization:      o.GetIgnoreDaemonSetsUtilization(),
	}, nil
}

// ErrLegacyFieldMissing marks an answer that would make CA 1.34.1 dereference a nil pointer.
var ErrLegacyFieldMissing = fmt.Errorf("legacy field missing: CA 1.34.1 would panic (nil pointer dereference)")

func metaDuration(d time.Duration) []byte {
	md := metav1.Duration{Duration: d}
	b, err := md.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

func parseMetaDuration(field string, b []byte) (time.Duration, error) {
	if b == nil {
		return 0, fmt.Errorf("%s: %w", field, ErrLegacyFieldMissing)
	}
	var md metav1.Duration
	if err := md.Unmarshal(b); err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return md.Duration, nil
}
