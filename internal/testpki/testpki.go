// Package testpki makes certificates for tests: a server, a client CA, a
// second CA, and client certificates valid and broken in every way that
// matters to request mTLS, written as PEM files into a test's directory.
//
// Client certificates are valid over a fixed window around Now, so tests
// run the server with a frozen clock and never depend on the wall clock.
// The server certificate is valid for years around the real time, since
// clients check it against their own clock.
package testpki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/certs"
)

// Now is the frozen time at which client certificates are checked.
var Now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// PKI holds the file names of everything it made.
type PKI struct {
	Dir string
	CA  *certs.Authority // the client CA, also the server's issuer

	RootCA, OtherCA, BotCA string // CA bundles
	ServerCert, ServerKey  string

	// Client certificate pairs, by name: "valid", "other-ca", "bot",
	// "no-san", "expired", "not-yet-valid", "no-clientauth", "no-eku",
	// "ca-as-leaf", "any-eku" (anyExtendedKeyUsage instead of clientAuth),
	// "forged-name" (a DNS name holding a newline, from the other CA),
	// "self-signed".
	Clients map[string][2]string
}

// New makes a PKI in a new temporary directory of t.
func New(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), Clients: map[string][2]string{}}
	long0, long1 := time.Now().AddDate(-1, 0, 0), time.Now().AddDate(5, 0, 0)
	ca := newCA(t, "test client root", long0, long1)
	other := newCA(t, "other root", long0, long1)
	bot := newCA(t, "bot root", long0, long1)
	p.CA = ca
	p.RootCA = p.writeCert(t, "rootCA.crt", ca.Cert)
	p.OtherCA = p.writeCert(t, "otherCA.crt", other.Cert)
	p.BotCA = p.writeCert(t, "botCA.crt", bot.Cert)

	srv, srvKey := issue(t, ca, certs.Leaf{CommonName: "localhost", Hosts: []string{"localhost", "127.0.0.1", "::1"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: long0, NotAfter: long1})
	p.ServerCert = p.writeCert(t, "server.crt", srv)
	p.ServerKey = p.writeKey(t, "server.key", srvKey)

	nb, na := Now.AddDate(0, -1, 0), Now.AddDate(0, 6, 0)
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	for name, spec := range map[string]struct {
		ca   *certs.Authority
		leaf certs.Leaf
	}{
		"valid":         {ca, certs.Leaf{Hosts: []string{"client.example"}, ExtKeyUsage: clientAuth, NotBefore: nb, NotAfter: na}},
		"other-ca":      {other, certs.Leaf{Hosts: []string{"client.example"}, ExtKeyUsage: clientAuth, NotBefore: nb, NotAfter: na}},
		"bot":           {bot, certs.Leaf{Hosts: []string{"bot.example"}, ExtKeyUsage: clientAuth, NotBefore: nb, NotAfter: na}},
		"no-san":        {ca, certs.Leaf{CommonName: "no-san", ExtKeyUsage: clientAuth, NotBefore: nb, NotAfter: na}},
		"expired":       {ca, certs.Leaf{Hosts: []string{"expired.example"}, ExtKeyUsage: clientAuth, NotBefore: Now.AddDate(-1, 0, 0), NotAfter: Now.AddDate(0, 0, -1)}},
		"not-yet-valid": {ca, certs.Leaf{Hosts: []string{"future.example"}, ExtKeyUsage: clientAuth, NotBefore: Now.AddDate(0, 0, 1), NotAfter: Now.AddDate(1, 0, 0)}},
		"no-clientauth": {ca, certs.Leaf{Hosts: []string{"server-only.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: nb, NotAfter: na}},
		"no-eku":        {ca, certs.Leaf{Hosts: []string{"no-eku.example"}, NotBefore: nb, NotAfter: na}},
		"ca-as-leaf":    {ca, certs.Leaf{Hosts: []string{"ca.example"}, ExtKeyUsage: clientAuth, IsCA: true, NotBefore: nb, NotAfter: na}},
		"any-eku":       {ca, certs.Leaf{Hosts: []string{"any.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, NotBefore: nb, NotAfter: na}},
		// A name that would forge a /debug line if printed as it is.
		"forged-name": {other, certs.Leaf{Hosts: []string{"x\nCert validated: true"}, ExtKeyUsage: clientAuth, NotBefore: nb, NotAfter: na}},
	} {
		c, k := issue(t, spec.ca, spec.leaf)
		p.Clients[name] = [2]string{p.writeCert(t, name+".crt", c), p.writeKey(t, name+".key", k)}
	}
	// A self-signed client certificate (not a CA), with the usage and
	// name right.
	sk, err := certs.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "self.example"},
		DNSNames: []string{"self.example"}, ExtKeyUsage: clientAuth, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: nb, NotAfter: na, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, sk.Public(), sk)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := x509.ParseCertificate(der)
	p.Clients["self-signed"] = [2]string{p.writeCert(t, "self-signed.crt", sc), p.writeKey(t, "self-signed.key", sk)}
	return p
}

func newCA(t testing.TB, name string, nb, na time.Time) *certs.Authority {
	t.Helper()
	ca, err := certs.NewCA(pkix.Name{CommonName: name}, nil, nil, nb, na)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t testing.TB, ca *certs.Authority, l certs.Leaf) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	c, k, err := ca.Issue(l)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func (p *PKI) writeCert(t testing.TB, name string, c *x509.Certificate) string {
	return p.write(t, name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func (p *PKI) writeKey(t testing.TB, name string, k crypto.Signer) string {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func (p *PKI) write(t testing.TB, name string, data []byte) string {
	t.Helper()
	f := filepath.Join(p.Dir, name)
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
