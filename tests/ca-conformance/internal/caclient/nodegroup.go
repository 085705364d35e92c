package caclient

import (
	"fmt"
	"sync"

	"google.golang.org/protobuf/types/known/durationpb"
	apiv1 "k8s.io/api/core/v1"

	pb "autoscaler-cloudify/tests/ca-conformance/internal/wire"
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

// TemplateNodeInfo: UNIMPLEMENTED -> ErrNotImplemented; empty nodeBytes -> (nil, nil) (cached);
// else v1.Node.Unmarshal(nodeBytes) wrapped into a NodeInfo (cached for this object's life).
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
	if len(res.GetNodeBytes()) == 0 {
		n.nodeInfo = new(*NodeInfo)
		return nil, nil
	}
	node := &apiv1.Node{}
	if err := node.Unmarshal(res.GetNodeBytes()); err != nil {
		return nil, fmt.Errorf("failed to unmarshal nodeBytes: %w", err)
	}
	ni := &NodeInfo{node: node}
	n.nodeInfo = &ni
	return ni, nil
}

// GetOptions sends the defaults (durations in 8/9/10) and converts the answer; UNIMPLEMENTED ->
// ErrNotImplemented; no options message -> (nil, nil) i.e. CA uses its defaults; absent
// durations silently become 0 (durationpb AsDuration of nil).
func (n *ExternalGrpcNodeGroup) GetOptions(defaults NodeGroupAutoscalingOptions) (*NodeGroupAutoscalingOptions, error) {
	res := &pb.NodeGroupAutoscalingOptionsResponse{}
	err := n.client.invoke("NodeGroupGetOptions", &pb.NodeGroupAutoscalingOptionsRequest{
		Id: n.id,
		Defaults: &pb.NodeGroupAutoscalingOptions{
			ScaleDownUtilizationThreshold:    defaults.ScaleDownUtilizationThreshold,
			ScaleDownGpuUtilizationThreshold: defaults.ScaleDownGpuUtilizationThreshold,
			ScaleDownUnneededDuration:        durationpb.New(defaults.ScaleDownUnneededTime),
			ScaleDownUnreadyDuration:         durationpb.New(defaults.ScaleDownUnreadyTime),
			MaxNodeProvisionDuration:         durationpb.New(defaults.MaxNodeProvisionTime),
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
	return &NodeGroupAutoscalingOptions{
		ScaleDownUtilizationThreshold:    o.GetScaleDownUtilizationThreshold(),
		ScaleDownGpuUtilizationThreshold: o.GetScaleDownGpuUtilizationThreshold(),
		ScaleDownUnneededTime:            o.GetScaleDownUnneededDuration().AsDuration(),
		ScaleDownUnreadyTime:             o.GetScaleDownUnreadyDuration().AsDuration(),
		MaxNodeProvisionTime:             o.GetMaxNodeProvisionDuration().AsDuration(),
		ZeroOrMaxNodeScaling:             o.GetZeroOrMaxNodeScaling(),
		IgnoreDaemonSetsUtilization:      o.GetIgnoreDaemonSetsUtilization(),
	}, nil
}
