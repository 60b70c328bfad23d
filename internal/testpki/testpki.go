// Package testpki makes certificates for tests: a server, a client CA, a
// second CA, and client certificates valid and broken in every way that
// matters to request mTLS, written as PEM files into a test's directory.
//
// Every certificate is made relative to Now, the moment the test binary
// started: client certificates are valid from a month before it to six
// months after (the expired and not-yet-valid ones a day either side), the
// CAs and the server certificate from a year before to five years after.
// So the fixtures are good on any date. Tests that freeze the clock give
// the same Now to both sides of a handshake (the server's Now, the
// client's Time).
//
// REQ_MTLS_TEST_YEARS=N moves Now N years ahead of the wall clock, to show
// that the suite holds whatever the date: every in-process handshake then
// runs on that injected clock on both sides. Tests whose peers read the
// wall clock (other programs, stock crypto/tls clients without a clock)
// make their fixtures with NewAt(t, time.Now()).
package testpki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/certs"
)

// Now is the frozen time around which certificates are made and checked:
// the moment the test binary started, moved by REQ_MTLS_TEST_YEARS.
var Now = start()

// Clock returns Now, for the Now and Time fields of configs.
func Clock() time.Time { return Now }

func start() time.Time {
	now := time.Now().Truncate(time.Second)
	if v := os.Getenv("REQ_MTLS_TEST_YEARS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			panic(fmt.Sprintf("REQ_MTLS_TEST_YEARS=%q: want a whole number of years from 0 to 100", v))
		}
		now = now.AddDate(n, 0, 0)
	}
	return now
}

// PKI holds the file names of everything it made.
type PKI struct {
	Dir string
	Now time.Time        // the moment its certificates are made around
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

// New makes a PKI around Now in a new temporary directory of t.
func New(t testing.TB) *PKI {
	t.Helper()
	return NewAt(t, Now)
}

// NewAt makes a PKI around now: for tests whose peers read the wall clock,
// NewAt(t, time.Now()).
func NewAt(t testing.TB, now time.Time) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), Now: now, Clients: map[string][2]string{}}
	long0, long1 := now.AddDate(-1, 0, 0), now.AddDate(5, 0, 0)
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

	nb, na := now.AddDate(0, -1, 0), now.AddDate(0, 6, 0)
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	for name, spec := range map[string]struct {
		ca   *certs.Authority
		leaf certs.Leaf
	}{
		"valid":         {ca, certs.Leaf{Hosts: []string{"client.example"}, ExtKeyUsage: clientAuth, NotBefore: nb, NotAfter: na}},
		"other-ca":      {other, certs.Leaf{Hosts: []string{"client.example"}, ExtKeyUsage: clientAuth, NotBefore: nb, NotAfter: na}},
		"bot":           {bot, certs.Leaf{Hosts: []string{"bot.example"}, ExtKeyUsage: clientAuth, NotBefore: nb, NotAfter: na}},
		"no-san":        {ca, certs.Leaf{CommonName: "no-san", ExtKeyUsage: clientAuth, NotBefore: nb, NotAfter: na}},
		"expired":       {ca, certs.Leaf{Hosts: []string{"expired.example"}, ExtKeyUsage: clientAuth, NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(0, 0, -1)}},
		"not-yet-valid": {ca, certs.Leaf{Hosts: []string{"future.example"}, ExtKeyUsage: clientAuth, NotBefore: now.AddDate(0, 0, 1), NotAfter: now.AddDate(1, 0, 0)}},
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
