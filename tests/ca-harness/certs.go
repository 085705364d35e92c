package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI holds throwaway PEM files: a CA, a server cert (SAN 127.0.0.1, ::1, localhost) and a
// client cert, all signed by the CA, plus a client cert from a second, untrusted CA.
type PKI struct {
	CACert, ServerCert, ServerKey, ClientCert, ClientKey string
	RogueClientCert, RogueClientKey                      string
}

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial int64 = 1

func newCA(t testing.TB, name string) issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return issuer{cert: cert, key: key}
}

func (ca issuer) issue(t testing.TB, dir, base, cn string, usage x509.ExtKeyUsage, dns []string, ips []net.IP) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	certPath := filepath.Join(dir, base+".crt")
	keyPath := filepath.Join(dir, base+".key")
	writePEM(t, certPath, "CERTIFICATE", der)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyPath, "PRIVATE KEY", kder)
	return certPath, keyPath
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// NewPKI writes the throwaway PKI into a temp dir.
func NewPKI(t testing.TB) PKI {
	t.Helper()
	dir := t.TempDir()
	ca := newCA(t, "ca-conformance test CA")
	var p PKI
	p.CACert = filepath.Join(dir, "ca.crt")
	writePEM(t, p.CACert, "CERTIFICATE", ca.cert.Raw)
	p.ServerCert, p.ServerKey = ca.issue(t, dir, "server", "autoscaler-cloudify", x509.ExtKeyUsageServerAuth,
		[]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")})
	p.ClientCert, p.ClientKey = ca.issue(t, dir, "client", "cluster-autoscaler", x509.ExtKeyUsageClientAuth, nil, nil)
	rogue := newCA(t, "rogue CA")
	p.RogueClientCert, p.RogueClientKey = rogue.issue(t, dir, "rogue-client", "cluster-autoscaler", x509.ExtKeyUsageClientAuth, nil, nil)
	return p
}
