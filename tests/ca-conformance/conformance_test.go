package conformance

// CA 1.36.1's own externalgrpc client (k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc,
// built with BuildExternalGrpc from a cloud-config file, as CA's main does) against the real
// autoscaler-cloudify binary: the scenario in tests/ca-conformance-suite, compiled here against CA
// 1.36.1 (nodeBytes in field 2, google Durations 8/9/10, Timestamps 4/5, pod 4/5/6).

import (
	"testing"
	"time"

	apiv1 "k8s.io/api/core/v1"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc"
	"k8s.io/autoscaler/cluster-autoscaler/config"
	coreoptions "k8s.io/autoscaler/cluster-autoscaler/core/options"

	suite "autoscaler-cloudify/tests/ca-conformance-suite"
)

// ca136 is CA 1.36.1's client API as the suite needs it.
var ca136 = suite.Version{
	BuildExternalGrpc: func(cloudConfig string) cloudprovider.CloudProvider {
		opts := &coreoptions.AutoscalerOptions{AutoscalingOptions: config.AutoscalingOptions{CloudConfig: cloudConfig}}
		return externalgrpc.BuildExternalGrpc(opts, cloudprovider.NodeGroupDiscoveryOptions{}, nil)
	},
	GPUResourceName: func(gc *cloudprovider.GpuConfig) apiv1.ResourceName { return gc.ExtendedResourceName },
	OptionDefaults: func(d *config.NodeGroupAutoscalingOptions) {
		d.MaxNodeStartupTime = 15 * time.Minute // not on the wire: see ExpectOptions
	},
	ExpectOptions: func(t *testing.T, defaults, got config.NodeGroupAutoscalingOptions, want *config.NodeGroupAutoscalingOptions) {
		// Upstream issue 10245: CA 1.36's client builds the answer without MaxNodeStartupTime (the
		// proto has no field for it), so a group with options gets 0 whatever the defaults say.
		// `autoscaler-cloudify check` warns about it; docs/configuration.md explains the choice.
		want.MaxNodeStartupTime = 0
		t.Logf("GetOptions(workers): MaxNodeStartupTime %v reached CA as %v (issue 10245)", defaults.MaxNodeStartupTime, got.MaxNodeStartupTime)
	},
}

func TestConformance(t *testing.T) { suite.Conformance(t, ca136) }

func TestMTLS(t *testing.T) { suite.MTLS(t, ca136) }

// TestRealManager is the real-manager mode (issue 19): skipped without CLOUDIFY_MANAGER_URL,
// run by the manager tier (tests/manager/run.sh) with CA_CONFORMANCE_MANAGER=1.
func TestRealManager(t *testing.T) { suite.RealManager(t, ca136) }
