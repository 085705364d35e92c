package conformance

// CA 1.34.1's own externalgrpc client (k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc
// at tag cluster-autoscaler-1.34.1) against the real autoscaler-cloudify binary: the pre-1.35 wire
// (template Node embedded in field 1, options durations as meta.v1.Duration in 3/4/5 and
// dereferenced without a nil check, pricing times as meta.v1.Time in 2/3, pod in field 1). The same
// scenario as tests/ca-conformance (CA 1.36.1), from tests/ca-conformance-suite; the differences
// are the two client APIs'.

import (
	"testing"

	apiv1 "k8s.io/api/core/v1"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc"
	"k8s.io/autoscaler/cluster-autoscaler/config"

	suite "autoscaler-cloudify/tests/ca-conformance-suite"
)

// ca134 is CA 1.34.1's client API as the suite needs it. It has no MaxNodeStartupTime, so no
// OptionDefaults; and no ExpectOptions: the defaults reach the server only in 3/4/5 (1.34.1 sends
// no 8/9/10), so the echoed values prove the server reads the legacy request fields, and CA 1.34.1
// dereferences 3/4/5 of the answer without a nil check (an absent one would crash it).
var ca134 = suite.Version{
	BuildExternalGrpc: func(cloudConfig string) cloudprovider.CloudProvider {
		opts := config.AutoscalingOptions{CloudConfig: cloudConfig}
		return externalgrpc.BuildExternalGrpc(opts, cloudprovider.NodeGroupDiscoveryOptions{}, nil)
	},
	GPUResourceName: func(gc *cloudprovider.GpuConfig) apiv1.ResourceName { return gc.ResourceName },
}

func TestConformance134(t *testing.T) { suite.Conformance(t, ca134) }

func TestMTLS(t *testing.T) { suite.MTLS(t, ca134) }
