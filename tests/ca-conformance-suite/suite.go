// Package suite is the Go conformance tier's scenario, written once and run by one Go module per
// Cluster Autoscaler release (tests/ca-conformance: CA 1.36.1, tests/ca-conformance-134: CA 1.34.1).
//
// CA's own externalgrpc client (k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc,
// built with BuildExternalGrpc from a cloud-config file, as CA's main does) against the real
// autoscaler-cloudify binary (`serve` + `simulator`), driven through the CloudProvider / NodeGroup
// interfaces the way the CA core calls them. CA's code is the judge: no wire code of our own.
//
// This module requires the oldest CA release the tier covers (1.34.1) and uses only CA API present
// in every covered release; each version module requires its own release, so Go's minimal version
// selection compiles this package against that release there. What differs between the releases'
// client APIs (how BuildExternalGrpc is called, fields only one of them has, what its client makes
// of the options answer) comes in through Version, from the version module.
package suite

import (
	"testing"

	apiv1 "k8s.io/api/core/v1"

	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider"
	"k8s.io/autoscaler/cluster-autoscaler/config"
)

// Scenario and ProviderConfig are the simulator scenario and the provider config template every
// test starts its stack from. `go test` runs in the version module's directory, a sibling of this
// module's, hence the relative path.
const (
	Scenario       = "../ca-conformance-suite/testdata/scenario.yaml"
	ProviderConfig = "../ca-conformance-suite/testdata/provider.yaml"
)

// Version is one CA release's client API, as far as the scenario depends on it.
type Version struct {
	// BuildExternalGrpc builds the provider exactly as CA's main does for
	// --cloud-provider=externalgrpc --cloud-config=FILE (BuildExternalGrpc reads the file, dials,
	// and wraps the client); the options type it takes differs per release.
	BuildExternalGrpc func(cloudConfig string) cloudprovider.CloudProvider

	// GPUResourceName is the extended resource name of a GetNodeGpuConfig answer (the field's
	// name differs per release).
	GPUResourceName func(gc *cloudprovider.GpuConfig) apiv1.ResourceName

	// OptionDefaults, when set, fills the release-only fields of the defaults CA passes to
	// GetOptions; the shared fields are set by the scenario.
	OptionDefaults func(defaults *config.NodeGroupAutoscalingOptions)

	// ExpectOptions, when set, adjusts the expected GetOptions answer for a group with options to
	// what this release's client builds (fields its wire does not carry), logging why; got is
	// the answer, compared with want right after.
	ExpectOptions func(t *testing.T, defaults, got config.NodeGroupAutoscalingOptions, want *config.NodeGroupAutoscalingOptions)
}
