package suite

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"

	"autoscaler-cloudify/tests/ca-harness"
)

// MTLS checks mTLS on a stack of its own: serve with --tls-cert/--tls-key/--tls-client-ca; CA's
// client built from a cloud-config with cert/key/cacert works (address by IP and by name, both in
// the server cert's SANs); a client without a certificate, with a certificate from another CA, or
// in plaintext is refused.
func MTLS(t *testing.T, v Version) {
	pki := harness.NewPKI(t)
	s := harness.StartStack(t, Scenario, harness.ServeOptions{
		ConfigTemplate: ProviderConfig,
		ExtraArgs:      []string{"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.CACert},
	})
	build := func(t *testing.T, body string) cloudprovider.CloudProvider {
		t.Helper()
		return v.BuildExternalGrpc(s.CloudConfig(t, body))
	}

	for _, host := range []string{"127.0.0.1", "localhost"} {
		t.Run("client-cert/"+host, func(t *testing.T) {
			p := build(t, fmt.Sprintf("address: \"%s:%d\"\ncert: %q\nkey: %q\ncacert: %q\ngrpc_timeout: 10s\n",
				host, s.GRPCPort, pki.ClientCert, pki.ClientKey, pki.CACert))
			if err := p.Refresh(); err != nil {
				t.Fatalf("Refresh over mTLS: %v", err)
			}
			groups := p.NodeGroups()
			if len(groups) != 3 {
				t.Fatalf("NodeGroups over mTLS = %d groups", len(groups))
			}
			for _, g := range groups {
				if g.Id() == workersID {
					if n, err := g.TargetSize(); err != nil || n != 2 {
						t.Errorf("TargetSize over mTLS = %d, %v", n, err)
					}
				}
			}
		})
	}

	refused := func(t *testing.T, p cloudprovider.CloudProvider) {
		t.Helper()
		err := p.Refresh()
		if err == nil {
			t.Fatalf("Refresh succeeded, want refused")
		}
		t.Logf("refused as expected: %v", err)
		if n := len(p.NodeGroups()); n != 0 {
			t.Errorf("NodeGroups returned %d groups, want none", n)
		}
	}
	t.Run("no-client-cert", func(t *testing.T) {
		// CA itself cannot express "TLS without a client cert" (no cert => plaintext): this is CA's
		// generated client over the same TLS dial with the client certificate left out.
		pem, err := os.ReadFile(pki.CACert)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{ServerName: "127.0.0.1", RootCAs: roots})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := protos.NewCloudProviderClient(conn).Refresh(ctx, &protos.RefreshRequest{}); err == nil {
			t.Fatalf("Refresh without a client certificate succeeded")
		} else {
			t.Logf("refused as expected: %v", err)
		}
	})
	t.Run("rogue-client-cert", func(t *testing.T) {
		refused(t, build(t, fmt.Sprintf("address: \"127.0.0.1:%d\"\ncert: %q\nkey: %q\ncacert: %q\ngrpc_timeout: 5s\n",
			s.GRPCPort, pki.RogueClientCert, pki.RogueClientKey, pki.CACert)))
	})
	t.Run("plaintext", func(t *testing.T) {
		refused(t, build(t, fmt.Sprintf("address: \"127.0.0.1:%d\"\ngrpc_timeout: 5s\n", s.GRPCPort)))
	})
}
