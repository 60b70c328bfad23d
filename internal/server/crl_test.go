package server

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/testpki"
)

// opensslCA is a CA run with `openssl ca`: its index of issued and revoked
// certificates, and the CRLs it makes.
type opensslCA struct {
	t   *testing.T
	dir string
	cnf string
}

// newOpensslCA sets up `openssl ca` for the CA whose certificate is caFile,
// with key.
func newOpensslCA(t *testing.T, name, caFile string, key crypto.Signer) *opensslCA {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: CI installs it (apt-get install openssl)")
	}
	dir := filepath.Join(t.TempDir(), name)
	os.MkdirAll(dir, 0o700)
	keyPEM, _ := os.ReadFile(writeKey(t, key))
	os.WriteFile(filepath.Join(dir, "ca.key"), keyPEM, 0o600)
	data, _ := os.ReadFile(caFile)
	os.WriteFile(filepath.Join(dir, "ca.crt"), data, 0o600)
	os.WriteFile(filepath.Join(dir, "index.txt"), nil, 0o600)
	os.WriteFile(filepath.Join(dir, "crlnumber"), []byte("01\n"), 0o600)
	cnf := filepath.Join(dir, "ca.cnf")
	os.WriteFile(cnf, []byte(`[ ca ]
default_ca = this
[ this ]
dir = `+dir+`
database = $dir/index.txt
crlnumber = $dir/crlnumber
certificate = $dir/ca.crt
private_key = $dir/ca.key
default_md = sha256
default_crl_days = 1
`), 0o600)
	return &opensslCA{t: t, dir: dir, cnf: cnf}
}

func (ca *opensslCA) run(args ...string) {
	ca.t.Helper()
	out, err := exec.Command("openssl", append([]string{"ca", "-config", ca.cnf, "-batch"}, args...)...).CombinedOutput()
	if err != nil {
		ca.t.Fatalf("openssl ca %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// revoke marks the certificate in certFile revoked in the index.
func (ca *opensslCA) revoke(certFile string) { ca.run("-revoke", certFile) }

// crl makes a CRL valid from a day before testpki.Now to from+days (days
// may be negative: a CRL past its nextUpdate), written to file.
func (ca *opensslCA) crl(file string, fromDays, toDays int) {
	ts := func(d int) string { return testpki.Now.AddDate(0, 0, d).UTC().Format("20060102150405Z") }
	tmp := file + ".tmp"
	ca.run("-gencrl", "-crl_lastupdate", ts(fromDays), "-crl_nextupdate", ts(toDays), "-out", tmp)
	if err := os.Rename(tmp, file); err != nil {
		ca.t.Fatal(err)
	}
}

// TestCRL: CRLs made by `openssl ca`, in the handshake and /debug, at load,
// reloaded under a live connection, and past their nextUpdate.
func TestCRL(t *testing.T) {
	p := testpki.New(t)
	// A second client of the same CA, never revoked.
	c2, k2, err := p.CA.Issue(certs.Leaf{Hosts: []string{"second.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: p.Now.AddDate(0, -1, 0), NotAfter: p.Now.AddDate(0, 6, 0)})
	if err != nil {
		t.Fatal(err)
	}
	second := [2]string{writePEM(t, "CERTIFICATE", c2.Raw), writeKey(t, k2)}
	ca := newOpensslCA(t, "client-ca", p.RootCA, p.CA.Key)
	files := livePKI(t, p)
	files.ClientCRL = filepath.Join(filepath.Dir(files.ClientCA), "crl.pem")
	ca.crl(files.ClientCRL, -1, 1) // nothing revoked yet

	t.Run("LoadRefusesOtherCA", func(t *testing.T) {
		oca, err := certs.NewCA(pkix.Name{CommonName: "other root"}, nil, nil, p.Now.AddDate(-1, 0, 0), p.Now.AddDate(5, 0, 0))
		if err != nil {
			t.Fatal(err)
		}
		other := newOpensslCA(t, "other-ca", writePEM(t, "CERTIFICATE", oca.Cert.Raw), oca.Key)
		bad := filepath.Join(t.TempDir(), "other.crl")
		other.crl(bad, -1, 1)
		f := files
		f.ClientCRL = bad
		_, err = New(Config{Files: f})
		if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "issuer CN=other root") ||
			!strings.Contains(err.Error(), "not signed by a CA of the client or bot store") {
			t.Errorf("a CRL of another CA: %v", err)
		}
		os.WriteFile(bad, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o600)
		if _, err := New(Config{Files: f}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("a malformed CRL: %v", err)
		}
	})

	ts := watchedServer(t, p, Config{Policy: PolicyRequire, Files: files})

	// A live HTTP/2 connection of the client about to be revoked.
	live, conn := liveConn(t, ts, p, "valid")

	// Revoke it: the reload closes its connection, and new handshakes
	// with it fail with certificate_revoked.
	ca.revoke(p.Clients["valid"][0])
	ca.crl(files.ClientCRL, -1, 1)
	waitFor(t, "the revoking reload to close the live connection", func() bool {
		return strings.Contains(ts.logs.String(), "closing connection: its client certificate no longer validates")
	})
	if !strings.Contains(ts.logs.String(), `parts="[client CRL]"`) ||
		!strings.Contains(ts.logs.String(), `msg="client CRL loaded" issuer="CN=test client root" revoked=1`) {
		t.Errorf("no reload of the CRL, or what it holds, in the log:\n%s", ts.logs)
	}
	if _, err := live.RoundTrip(conn, mustGet(ts.url.String())); err == nil {
		t.Error("the revoked client's live connection still serves")
	}
	o := fetch(t, ts, p, withCert(p, "valid", 80), "/debug")
	if o.err == nil || !strings.Contains(o.err.Error(), "certificate_revoked") {
		t.Errorf("revoked client under require: %v, want certificate_revoked", o.err)
	}
	t.Logf("revoked client: %v", o.err)
	cfg2 := withCert(p, "", 80)
	cfg2.CertFile, cfg2.KeyFile = second[0], second[1]
	if o := fetch(t, ts, p, cfg2, "/debug"); o.err != nil || !strings.HasSuffix(o.body, "Cert validated: true\n") {
		t.Errorf("not revoked: %v\n%s", o.err, o.body)
	}

	// TLS 1.2 under always: the alert goes in the clear, rewritten too.
	as := startServer(t, p, Config{Policy: PolicyAlways, Files: files})
	cfg12 := withCert(p, "valid")
	cfg12.TLS12Only = true
	if o := fetch(t, as, p, cfg12, "/debug"); o.err == nil || !strings.Contains(o.err.Error(), "certificate_revoked") {
		t.Errorf("revoked client over TLS 1.2 under always: %v, want certificate_revoked", o.err)
	}

	// Under request: served, and /debug says why not valid.
	rs := startServer(t, p, Config{Policy: PolicyRequest, Files: files})
	if o := fetch(t, rs, p, withCert(p, "valid", 80), "/debug?format=json"); o.err != nil || !strings.Contains(o.body, `"revoked: serial `) {
		t.Errorf("revoked client under request: %v\n%s", o.err, o.body)
	}

	// Past its nextUpdate: nothing of that issuer validates, loudly.
	ca.crl(files.ClientCRL, -2, -1)
	waitFor(t, "the stale CRL's reload", func() bool { return strings.Count(ts.logs.String(), `parts="[client CRL]"`) >= 2 })
	if o := fetch(t, ts, p, cfg2, "/debug"); o.err == nil {
		t.Error("a client of an issuer whose CRL is stale was served under require")
	}
	if !strings.Contains(ts.logs.String(), "CRL expired: certificates of its issuer do not validate") {
		t.Errorf("no loud line for the stale CRL:\n%s", ts.logs)
	}
	w := httptest.NewRecorder()
	ts.AdminHandler(false).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	want := `reqmtls_crl_next_update_seconds{issuer="CN=test client root"} ` + formatUnix(testpki.Now.AddDate(0, 0, -1))
	if !strings.Contains(w.Body.String(), want) {
		t.Errorf("metrics lack %q:\n%s", want, grepLines(w.Body.String(), "reqmtls_crl"))
	}
	t.Logf("%s", grepLines(w.Body.String(), "reqmtls_crl"))
}

func mustGet(u string) *http.Request {
	r, err := http.NewRequest("GET", u, nil)
	if err != nil {
		panic(err)
	}
	return r
}

// formatUnix writes a time as the Prometheus text format writes a gauge.
func formatUnix(t time.Time) string { return strconv.FormatFloat(float64(t.Unix()), 'g', -1, 64) }

func writePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "*.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pem.Encode(f, &pem.Block{Type: typ, Bytes: der})
	return f.Name()
}

func writeKey(t *testing.T, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, "PRIVATE KEY", der)
}

// TestCRLSurvivesRootReissue: the client CA bundle is written again with
// its root issued anew (same name and key, other bytes) while the CRL file
// stays as it is: the CRL still applies, and is checked against the new
// store.
func TestCRLSurvivesRootReissue(t *testing.T) {
	p := testpki.New(t)
	ca := newOpensslCA(t, "client-ca", p.RootCA, p.CA.Key)
	files := livePKI(t, p)
	files.ClientCRL = filepath.Join(filepath.Dir(files.ClientCA), "crl.pem")
	ca.revoke(p.Clients["valid"][0])
	ca.crl(files.ClientCRL, -1, 1)
	ts := watchedServer(t, p, Config{Policy: PolicyRequire, Files: files})

	again, err := certs.NewCA(pkix.Name{}, p.CA.Cert.RawSubject, p.CA.Key, p.Now.AddDate(-1, 0, 0), p.Now.AddDate(6, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Cert.Raw) == string(p.CA.Cert.Raw) {
		t.Fatal("the root issued again is the same certificate")
	}
	writeRename(t, files.ClientCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: again.Cert.Raw}))
	waitFor(t, "the store and the CRL to reload", func() bool {
		return strings.Contains(ts.logs.String(), `parts="[client CA bundle client CRL]"`)
	})
	if o := fetch(t, ts, p, withCert(p, "valid", 80), "/debug"); o.err == nil || !strings.Contains(o.err.Error(), "certificate_revoked") {
		t.Errorf("revoked client after the root was issued again: %v, want certificate_revoked", o.err)
	}
}

// TestCRLGoingStaleClosesConnections: when a CRL in force passes its
// nextUpdate, open connections of its issuer's certificates are closed
// under an enforcing policy, with no reload.
func TestCRLGoingStaleClosesConnections(t *testing.T) {
	p := testpki.New(t)
	ca := newOpensslCA(t, "client-ca", p.RootCA, p.CA.Key)
	files := livePKI(t, p)
	files.ClientCRL = filepath.Join(filepath.Dir(files.ClientCA), "crl.pem")
	// CRL times have whole seconds: due two to three seconds from now.
	due := testpki.Now.Add(3 * time.Second).Truncate(time.Second)
	tmp := files.ClientCRL + ".tmp"
	ca.run("-gencrl", "-crl_lastupdate", testpki.Now.Add(-time.Hour).UTC().Format("20060102150405Z"),
		"-crl_nextupdate", due.UTC().Format("20060102150405Z"), "-out", tmp)
	os.Rename(tmp, files.ClientCRL)
	// A clock that moves, from testpki.Now.
	start := time.Now()
	ts := watchedServer(t, p, Config{Policy: PolicyRequire, Files: files, Now: func() time.Time { return testpki.Now.Add(time.Since(start)) }})
	cl, conn := liveConn(t, ts, p, "valid") // served before the CRL's nextUpdate
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs)
		}
	}()
	waitFor(t, "the stale CRL to close the connection", func() bool {
		return strings.Contains(ts.logs.String(), "closing connection: its client certificate no longer validates")
	})
	if !strings.Contains(ts.logs.String(), "crl expired") {
		t.Errorf("the closing line does not say why:\n%s", ts.logs)
	}
	if _, err := cl.RoundTrip(conn, mustGet(ts.url.String())); err == nil {
		t.Error("the connection still serves after its CRL went stale")
	}
}

// watchedServer is startServer with its files watched until the test ends.
func watchedServer(t *testing.T, p *testpki.PKI, cfg Config) *testServer {
	t.Helper()
	ts := startServer(t, p, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ts.Watch(ctx)
	<-ts.auth.Watching()
	return ts
}

// liveConn opens a flagged HTTP/2 connection with the client certificate
// name that only the server closes, and makes one request on it.
func liveConn(t *testing.T, ts *testServer, p *testpki.PKI, name string) (*client.Client, *client.Conn) {
	t.Helper()
	return liveConnWith(t, ts, p, withCert(p, name, 80))
}

// liveConnWith is liveConn for a client config of the caller's.
func liveConnWith(t *testing.T, ts *testServer, p *testpki.PKI, cfg client.Config) (*client.Client, *client.Conn) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	cfg.RootCAs = pool
	cfg.IdleTimeout = time.Minute // the client keeps it: only the server may close it
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := cl.Dial(context.Background(), ts.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := cl.RoundTrip(conn, mustGet(ts.url.String())); err != nil {
		t.Fatalf("a request on the live connection: %v", err)
	}
	return cl, conn
}

// makeCRL signs a CRL of ca listing revoked, valid from a day before
// testpki.Now to a day after, with extra CRL extensions and, when
// entryExt is set, that extension on each entry.
func makeCRL(t *testing.T, ca *certs.Authority, revoked []*x509.Certificate, extra []pkix.Extension, entryExt *pkix.Extension) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{
		Number:          big.NewInt(time.Now().UnixNano()),
		ThisUpdate:      testpki.Now.AddDate(0, 0, -1),
		NextUpdate:      testpki.Now.AddDate(0, 0, 1),
		ExtraExtensions: extra,
	}
	for _, c := range revoked {
		e := x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: testpki.Now.Add(-time.Hour)}
		if entryExt != nil {
			e.ExtraExtensions = []pkix.Extension{*entryExt}
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, e)
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestCRLCriticalExtensions: a CRL with a critical extension that the
// server does not process is not a complete list of its issuer's
// revocations (RFC 5280, Section 5.2): refused at load, and at reload,
// where the last good list stays in force.
func TestCRLCriticalExtensions(t *testing.T) {
	p := testpki.New(t)
	valid, err := certs.LoadCertificate(p.Clients["valid"][0])
	if err != nil {
		t.Fatal(err)
	}
	// What the refused lists revoke: another client, so that "valid"
	// stays refused only while the last good list stays in force.
	other, err := certs.LoadCertificate(p.Clients["no-san"][0])
	if err != nil {
		t.Fatal(err)
	}
	idp := func(der ...byte) []pkix.Extension {
		return []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: append([]byte{0x30, byte(len(der))}, der...)}}
	}
	refused := []struct {
		name, why string
		extra     []pkix.Extension
		entry     *pkix.Extension
	}{
		// RFC 5280, Section 5.2.4: a delta CRL lists only what changed
		// since its base CRL (number 1 here).
		{"DeltaCRL", "delta CRL", []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{0x02, 0x01, 0x01}}}, nil},
		// RFC 5280, Section 5.2.5: the scope of the list narrowed.
		{"OnlyContainsCACerts", "onlyContainsCACerts", idp(0x82, 0x01, 0xff), nil},
		{"OnlySomeReasons", "onlySomeReasons", idp(0x83, 0x02, 0x06, 0x40), nil},
		{"IndirectCRL", "indirectCRL", idp(0x84, 0x01, 0xff), nil},
		{"OnlyContainsAttributeCerts", "onlyContainsAttributeCerts", idp(0x85, 0x01, 0xff), nil},
		{"UnknownCritical", "critical extension 1.3.6.1.4.1.55555.1", []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1}, Critical: true, Value: []byte{0x05, 0x00}}}, nil},
		// RFC 5280, Section 5.3: the same for an entry's extensions
		// (certificateIssuer, of indirect CRLs, is always critical).
		{"CriticalEntryExtension", "critical extension 2.5.29.29 of entry", nil,
			&pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 29}, Critical: true, Value: []byte{0x30, 0x00}}},
	}
	files := livePKI(t, p)
	files.ClientCRL = filepath.Join(filepath.Dir(files.ClientCA), "crl.pem")
	for _, c := range refused {
		t.Run("Load_"+c.name, func(t *testing.T) {
			f := files
			f.ClientCRL = filepath.Join(t.TempDir(), "crl.pem")
			os.WriteFile(f.ClientCRL, makeCRL(t, p.CA, []*x509.Certificate{other}, c.extra, c.entry), 0o600)
			_, err := New(Config{Files: f})
			if err == nil || !strings.Contains(err.Error(), f.ClientCRL) || !strings.Contains(err.Error(), c.why) {
				t.Errorf("loading a CRL with %s: %v, want an error naming the file and %q", c.name, err, c.why)
			}
		})
	}

	// Scopes the server does process: the distribution point where the
	// list is published, and a list of end-entity certificates only.
	for name, ext := range map[string][]pkix.Extension{
		"DistributionPoint":     idp(append([]byte{0xa0, 0x18, 0xa0, 0x16, 0x86, 0x14}, "http://ca.test/a.crl"...)...),
		"OnlyContainsUserCerts": idp(0x81, 0x01, 0xff),
	} {
		t.Run("Accepted_"+name, func(t *testing.T) {
			f := files
			f.ClientCRL = filepath.Join(t.TempDir(), "crl.pem")
			os.WriteFile(f.ClientCRL, makeCRL(t, p.CA, []*x509.Certificate{valid}, ext, nil), 0o600)
			ts := startServer(t, p, Config{Policy: PolicyRequire, Files: f})
			if o := fetch(t, ts, p, withCert(p, "valid", 80), "/debug"); o.err == nil || !strings.Contains(o.err.Error(), "certificate_revoked") {
				t.Errorf("revoked client under a CRL with %s: %v, want certificate_revoked", name, o.err)
			}
		})
	}

	// At reload: the list in force, which revokes "valid", stays when
	// the new one is refused.
	writeRename(t, files.ClientCRL, makeCRL(t, p.CA, []*x509.Certificate{valid}, nil, nil))
	ts := watchedServer(t, p, Config{Policy: PolicyRequire, Files: files})
	for _, c := range refused {
		writeRename(t, files.ClientCRL, makeCRL(t, p.CA, []*x509.Certificate{other}, c.extra, c.entry))
		waitFor(t, "the refused reload of a CRL with "+c.name, func() bool {
			return strings.Contains(ts.logs.String(), c.why)
		})
		if !strings.Contains(ts.logs.String(), `msg="reload failed; keeping the last good certificates" trigger="file change" part="client CRL"`) {
			t.Errorf("no refused reload in the log:\n%s", ts.logs)
		}
		if o := fetch(t, ts, p, withCert(p, "valid", 80), "/debug"); o.err == nil || !strings.Contains(o.err.Error(), "certificate_revoked") {
			t.Errorf("revoked client after a reload to a CRL with %s: %v, want certificate_revoked", c.name, o.err)
		}
	}
}

// TestCRLRevokesIntermediate: the root's CRL lists the intermediate CA
// that issued the client: the client is refused with certificate_revoked,
// and a client of another intermediate of the same root is served.
func TestCRLRevokesIntermediate(t *testing.T) {
	p := testpki.New(t)
	root := newRootCA(t, "intermediate test root")
	inter := func(name string) *certs.Authority {
		key, err := certs.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: p.Now.AddDate(-1, 0, 0), NotAfter: p.Now.AddDate(5, 0, 0),
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return &certs.Authority{Cert: c, Key: key}
	}
	revokedCA, goodCA := inter("revoked intermediate"), inter("good intermediate")
	client := func(ca *certs.Authority) client.Config {
		c, k, err := ca.Issue(certs.Leaf{Hosts: []string{"client.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			NotBefore: p.Now.AddDate(0, -1, 0), NotAfter: p.Now.AddDate(0, 6, 0)})
		if err != nil {
			t.Fatal(err)
		}
		cfg := withCert(p, "", 80)
		chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})...)
		cfg.CertFile, cfg.KeyFile = filepath.Join(t.TempDir(), "chain.pem"), writeKey(t, k)
		os.WriteFile(cfg.CertFile, chain, 0o600)
		return cfg
	}
	files := Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: writePEM(t, "CERTIFICATE", root.Cert.Raw)}
	files.ClientCRL = filepath.Join(t.TempDir(), "crl.pem")
	os.WriteFile(files.ClientCRL, makeCRL(t, root, []*x509.Certificate{revokedCA.Cert}, nil, nil), 0o600)
	ts := startServer(t, p, Config{Policy: PolicyRequire, Files: files})
	if o := fetch(t, ts, p, client(revokedCA), "/debug"); o.err == nil || !strings.Contains(o.err.Error(), "certificate_revoked") {
		t.Errorf("client of a revoked intermediate: %v, want certificate_revoked", o.err)
	}
	if o := fetch(t, ts, p, client(goodCA), "/debug"); o.err != nil || !strings.HasSuffix(o.body, "Cert validated: true\n") {
		t.Errorf("client of an intermediate not revoked: %v\n%s", o.err, o.body)
	}
	rs := startServer(t, p, Config{Policy: PolicyRequest, Files: files})
	if o := fetch(t, rs, p, client(revokedCA), "/debug?format=json"); o.err != nil || !strings.Contains(o.body, `is in the CRL of CN=intermediate test root`) {
		t.Errorf("client of a revoked intermediate under request: %v\n%s", o.err, o.body)
	}

	// The intermediates in the CA bundle beside the root, as bundles
	// often are: the verified path then ends at the intermediate, whose
	// issuer's CRL still applies to it.
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	var b []byte
	for _, c := range []*x509.Certificate{root.Cert, revokedCA.Cert, goodCA.Cert} {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	os.WriteFile(bundle, b, 0o600)
	files.ClientCA = bundle
	bs := startServer(t, p, Config{Policy: PolicyRequire, Files: files})
	if o := fetch(t, bs, p, client(revokedCA), "/debug"); o.err == nil || !strings.Contains(o.err.Error(), "certificate_revoked") {
		t.Errorf("client of a revoked intermediate held in the CA bundle: %v, want certificate_revoked", o.err)
	}
	if o := fetch(t, bs, p, client(goodCA), "/debug"); o.err != nil || !strings.HasSuffix(o.body, "Cert validated: true\n") {
		t.Errorf("client of an intermediate not revoked, held in the CA bundle: %v\n%s", o.err, o.body)
	}
}

// newRootCA makes a root that may sign intermediate CAs.
func newRootCA(t *testing.T, name string) *certs.Authority {
	t.Helper()
	key, err := certs.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: testpki.Now.AddDate(-1, 0, 0), NotAfter: testpki.Now.AddDate(5, 0, 0),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &certs.Authority{Cert: c, Key: key}
}
