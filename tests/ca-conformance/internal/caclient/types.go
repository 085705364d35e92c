// Package caclient is a Go re-implementation of the client side of Cluster Autoscaler's
// externalgrpc cloud provider, CA 1.36.1 (k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc).
//
// Why a re-implementation: the Go module proxy reachable from this project's machines refuses
// k8s.io/autoscaler/cluster-autoscaler ("403 This module version is not available"), so the
// package cannot be imported, and copying its source into this repository is not an option.
// This package therefore reproduces, method by method, what CA's client does with each answer:
// the cloud-config keys and TLS dial, the single per-call deadline, the NodeGroups and
// NodeGroupForNode caches wiped by Refresh, the UNIMPLEMENTED -> ErrNotImplemented mapping of
// the four optional RPCs, the Instance status conversion (state 0 -> nil status, errorInfo only
// when errorCode != ""), v1.Node decoding of the template with the real k8s.io/api, and the
// options conversion (durations from fields 8/9/10, absent -> 0). Types mirror the names of
// CA's cloudprovider and config packages so the tests read like CA core code.
package caclient

import (
	"errors"
	"time"

	apiv1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ErrNotImplemented mirrors cloudprovider.ErrNotImplemented.
var ErrNotImplemented = errors.New("Not implemented")

// FakeNodeReasonAnnotation mirrors cloudprovider.FakeNodeReasonAnnotation.
const FakeNodeReasonAnnotation = "k8s.io/cluster-autoscaler/fake-node-reason"

// Fake node reasons used by CA's cluster state (clusterstate.FakeNode callers).
const (
	FakeNodeUnregistered = "unregistered"
	FakeNodeCreateError  = "create-error"
)

// InstanceState mirrors cloudprovider.InstanceState.
type InstanceState int

// Instance states (values are cast 1:1 from the proto enum by CA).
const (
	InstanceRunning  InstanceState = 1
	InstanceCreating InstanceState = 2
	InstanceDeleting InstanceState = 3
)

func (s InstanceState) String() string {
	switch s {
	case InstanceRunning:
		return "Running"
	case InstanceCreating:
		return "Creating"
	case InstanceDeleting:
		return "Deleting"
	}
	return "Unknown"
}

// InstanceErrorClass mirrors cloudprovider.InstanceErrorClass.
type InstanceErrorClass int

// Error classes.
const (
	OutOfResourcesErrorClass InstanceErrorClass = 1
	OtherErrorClass          InstanceErrorClass = 99
)

// Instance mirrors cloudprovider.Instance.
type Instance struct {
	Id     string
	Status *InstanceStatus
}

// InstanceStatus mirrors cloudprovider.InstanceStatus.
type InstanceStatus struct {
	State     InstanceState
	ErrorInfo *InstanceErrorInfo
}

// InstanceErrorInfo mirrors cloudprovider.InstanceErrorInfo.
type InstanceErrorInfo struct {
	ErrorClass   InstanceErrorClass
	ErrorCode    string
	ErrorMessage string
}

// NodeGroupAutoscalingOptions mirrors config.NodeGroupAutoscalingOptions (CA 1.36.1 fields).
type NodeGroupAutoscalingOptions struct {
	ScaleDownUtilizationThreshold    float64
	ScaleDownGpuUtilizationThreshold float64
	ScaleDownUnneededTime            time.Duration
	ScaleDownUnreadyTime             time.Duration
	MaxNodeProvisionTime             time.Duration
	ZeroOrMaxNodeScaling             bool
	IgnoreDaemonSetsUtilization      bool
	// Not on the wire (upstream issue #10245): always zero when the provider answers GetOptions.
	MaxNodeStartupTime         time.Duration
	AllowNonAtomicScaleUpToMax bool
}

// NodeInfo stands for CA's simulator/framework.NodeInfo built with NewNodeInfo(node, nil).
type NodeInfo struct{ node *apiv1.Node }

// Node returns the template node.
func (n *NodeInfo) Node() *apiv1.Node { return n.node }

// FakeNode mirrors clusterstate.FakeNode: what CA passes to DeleteNodes for instances that never
// registered or that report a create error (name == providerID == instance id, one annotation).
func FakeNode(instance Instance, reason string) *apiv1.Node {
	return &apiv1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        instance.Id,
			Annotations: map[string]string{FakeNodeReasonAnnotation: reason},
		},
		Spec: apiv1.NodeSpec{ProviderID: instance.Id},
	}
}

// CloudProvider is the part of cloudprovider.CloudProvider the externalgrpc provider implements
// with RPCs (plus the trivial local ones).
type CloudProvider interface {
	Name() string
	NodeGroups() []NodeGroup
	NodeGroupForNode(node *apiv1.Node) (NodeGroup, error)
	HasInstance(node *apiv1.Node) (bool, error)
	Pricing() (PricingModel, error)
	GPULabel() string
	GetAvailableGPUTypes() map[string]struct{}
	Cleanup() error
	Refresh() error
}

// NodeGroup is cloudprovider.NodeGroup as implemented by the externalgrpc provider.
type NodeGroup interface {
	MaxSize() int
	MinSize() int
	TargetSize() (int, error)
	IncreaseSize(delta int) error
	AtomicIncreaseSize(delta int) error
	DeleteNodes(nodes []*apiv1.Node) error
	ForceDeleteNodes(nodes []*apiv1.Node) error
	DecreaseTargetSize(delta int) error
	Id() string
	Debug() string
	Nodes() ([]Instance, error)
	TemplateNodeInfo() (*NodeInfo, error)
	Exist() bool
	Autoprovisioned() bool
	GetOptions(defaults NodeGroupAutoscalingOptions) (*NodeGroupAutoscalingOptions, error)
}

// PricingModel mirrors cloudprovider.PricingModel.
type PricingModel interface {
	NodePrice(node *apiv1.Node, startTime time.Time, endTime time.Time) (float64, error)
	PodPrice(pod *apiv1.Pod, startTime time.Time, endTime time.Time) (float64, error)
}
