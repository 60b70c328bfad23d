package certs

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// now is the moment the tests run: the certificates are made around it.
var now = time.Now().Truncate(time.Second)

func load(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	c, err := LoadCertificate(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWriteSet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	res, err := WriteSet(Options{Dir: dir, Hosts: []string{"example.test", "192.0.2.7"}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Files) != 6 || res.Demo {
		t.Fatalf("result %+v", res)
	}
	for _, f := range []string{"rootCA.key", "server.key", "client.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v", f, fi.Mode(), err)
		}
		data, _ := os.ReadFile(filepath.Join(dir, f))
		if b, _ := pem.Decode(data); b == nil || b.Type != "PRIVATE KEY" {
			t.Errorf("%s is not PKCS#8 PEM", f)
		}
	}
	root := load(t, filepath.Join(dir, "rootCA.crt"))
	server := load(t, filepath.Join(dir, "server.crt"))
	client := load(t, filepath.Join(dir, "client.crt"))
	if !root.IsCA || !root.MaxPathLenZero || root.MaxPathLen != 0 || len(root.SubjectKeyId) != 20 {
		t.Errorf("root: CA %v, MaxPathLenZero %v, SKID %x", root.IsCA, root.MaxPathLenZero, root.SubjectKeyId)
	}
	for _, c := range []*x509.Certificate{root, server, client} {
		if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() < 64 {
			t.Errorf("serial %v too small", c.SerialNumber)
		}
		if !c.NotBefore.Before(now) || !c.NotAfter.After(now.AddDate(2, 0, 0)) {
			t.Errorf("%s validity %v..%v", c.Subject, c.NotBefore, c.NotAfter)
		}
	}
	if server.SerialNumber.Cmp(client.SerialNumber) == 0 {
		t.Error("repeated serial")
	}
	ips := []string{}
	for _, ip := range server.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(server.DNSNames, []string{"localhost", "example.test"}) || !slices.Equal(ips, []string{"127.0.0.1", "::1", "192.0.2.7"}) {
		t.Errorf("server names %v %v", server.DNSNames, ips)
	}
	if !slices.Equal(client.DNSNames, []string{"client.example"}) || !slices.Equal(client.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || client.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("client: %v %v %v", client.DNSNames, client.ExtKeyUsage, client.KeyUsage)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client does not verify: %v", err)
	}
	if _, err := server.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, DNSName: "localhost"}); err != nil {
		t.Errorf("server does not verify: %v", err)
	}

	// No overwrite without Force; with it, new keys.
	before, _ := os.ReadFile(filepath.Join(dir, "client.key"))
	if _, err := WriteSet(Options{Dir: dir, Now: now}); err == nil || !strings.Contains(err.Error(), "use -force") {
		t.Errorf("overwrite without force: %v", err)
	}
	if _, err := WriteSet(Options{Dir: dir, Now: now, Force: true}); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "client.key"))
	if bytes.Equal(before, after) {
		t.Error("force did not write new keys")
	}
}

func TestCAKeyAndDemoSubject(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// An ordinary CA key: our own subject, no rootCA.key written.
	dir := t.TempDir()
	res, err := WriteSet(Options{Dir: dir, CAKey: key, Now: now})
	if err != nil || res.Demo {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "rootCA.key")); err == nil {
		t.Error("rootCA.key written for a caller's key")
	}
	if ChainsToDemoRoot(load(t, filepath.Join(dir, "client.crt"))) {
		t.Error("ordinary root taken for the demo root")
	}
	// A key recognised as the demo's (here: ours, by pointing the hash at
	// it): no root is ever made from it, only a client certificate under
	// the demo's subject bytes.
	h, _ := SPKIHash(key.Public())
	defer func(old string) { demoKeyHash = old }(demoKeyHash)
	demoKeyHash = h
	dir = t.TempDir()
	if _, err := WriteSet(Options{Dir: dir, CAKey: key, Now: now}); err != ErrDemoRoot {
		t.Fatalf("root from the demo key: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("files written after a refusal: %v", ents)
	}
	res, err = WriteSet(Options{Dir: dir, CAKey: key, ClientOnly: true, Now: now})
	if err != nil || !res.Demo {
		t.Fatalf("%+v %v", res, err)
	}
	if want := []string{filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")}; !slices.Equal(res.Files, want) {
		t.Errorf("files %v, want %v", res.Files, want)
	}
	client := load(t, filepath.Join(dir, "client.crt"))
	if !bytes.Equal(client.RawIssuer, DemoRootSubject) || !ChainsToDemoRoot(client) {
		t.Errorf("issuer %x", client.RawIssuer)
	}
	if err := VerifyDemoSignature(client, key.Public()); err != nil {
		t.Error(err)
	}
}

// demoKeyFile is the shipped copy of RFC 9500's testRSA4096.
const demoKeyFile = "../../third_party/rfc9500/testRSA4096.key"

// TestShippedDemoKey: the shipped key is testRSA4096 (its SPKI hash), and the
// client certificate made from it chains to the public demo's root: issuer
// exactly DemoRootSubject, signature verifying with the shipped key's public
// key, a DNS SAN, clientAuth and digitalSignature, no authority key
// identifier (the demo root's is not published).
func TestShippedDemoKey(t *testing.T) {
	key, err := LoadKey(demoKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := SPKIHash(key.Public()); err != nil || h != TestRSA4096SPKISHA256 {
		t.Fatalf("shipped key's SPKI SHA-256 is %s, want %s (%v)", h, TestRSA4096SPKISHA256, err)
	}
	if k, ok := key.(*rsa.PrivateKey); !ok || k.N.BitLen() != 4096 {
		t.Fatalf("shipped key is %T, not RSA 4096", key)
	}
	dir := t.TempDir()
	if _, err := WriteSet(Options{Dir: dir, CAKey: key, Now: now}); err != ErrDemoRoot {
		t.Fatalf("root from testRSA4096: %v", err)
	}
	res, err := WriteSet(Options{Dir: dir, CAKey: key, ClientOnly: true, Now: now})
	if err != nil || !res.Demo {
		t.Fatalf("%+v %v", res, err)
	}
	client := load(t, filepath.Join(dir, "client.crt"))
	if !bytes.Equal(client.RawIssuer, DemoRootSubject) {
		t.Errorf("issuer %x\nwant   %x", client.RawIssuer, DemoRootSubject)
	}
	if err := client.CheckSignature(client.SignatureAlgorithm, client.RawTBSCertificate, client.Signature); err == nil {
		t.Error("client certificate verifies with its own key: self-signed")
	}
	issuer := &x509.Certificate{RawSubject: DemoRootSubject, PublicKey: key.Public(), PublicKeyAlgorithm: x509.RSA}
	if err := client.CheckSignatureFrom(issuer); err != nil {
		t.Errorf("signature does not verify with the shipped key's public key: %v", err)
	}
	if err := VerifyDemoSignature(client, key.Public()); err != nil {
		t.Error(err)
	}
	if !slices.Equal(client.DNSNames, []string{"client.example"}) || !slices.Equal(client.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) ||
		client.KeyUsage != x509.KeyUsageDigitalSignature || client.IsCA || len(client.AuthorityKeyId) != 0 {
		t.Errorf("client: SANs %v, EKU %v, KU %v, CA %v, AKID %x", client.DNSNames, client.ExtKeyUsage, client.KeyUsage, client.IsCA, client.AuthorityKeyId)
	}
	// A root like the demo's (its subject bytes and key; its other fields
	// are not published) verifies it for clientAuth, as a Go server would.
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), RawSubject: DemoRootSubject, NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("does not verify against a root with the demo's subject and key: %v", err)
	}
}

// TestExistingCA: a client certificate under an existing CA, without a new
// root; another root name gives another subject.
func TestExistingCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteSet(Options{Dir: dir, CAName: "bots root", Now: now}); err != nil {
		t.Fatal(err)
	}
	root := load(t, filepath.Join(dir, "rootCA.crt"))
	if root.Subject.CommonName != "bots root" {
		t.Errorf("root subject %v", root.Subject)
	}
	ca, err := LoadAuthority(filepath.Join(dir, "rootCA.crt"), filepath.Join(dir, "rootCA.key"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "bot2")
	res, err := WriteSet(Options{Dir: out, CA: ca, ClientOnly: true, ClientName: "bot2.example", Now: now})
	if err != nil || res.Demo {
		t.Fatalf("%+v %v", res, err)
	}
	if ents, _ := os.ReadDir(out); len(ents) != 2 {
		t.Errorf("wrote %v", ents)
	}
	client := load(t, filepath.Join(out, "client.crt"))
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := client.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Error(err)
	}
	if !slices.Equal(client.DNSNames, []string{"bot2.example"}) || !bytes.Equal(client.AuthorityKeyId, root.SubjectKeyId) {
		t.Errorf("client %v, AKID %x", client.DNSNames, client.AuthorityKeyId)
	}
	// Without -force, nothing is overwritten.
	if _, err := WriteSet(Options{Dir: out, CA: ca, ClientOnly: true, Now: now}); err == nil || !strings.Contains(err.Error(), "client.crt exists") {
		t.Errorf("overwrite: %v", err)
	}
	// A leaf never outlives its CA; an expired CA issues nothing.
	short, err := NewCA(pkix.Name{CommonName: "short"}, nil, nil, now.Add(-time.Hour), now.AddDate(0, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteSet(Options{Dir: filepath.Join(dir, "short"), CA: short, ClientOnly: true, Now: now}); err != nil {
		t.Fatal(err)
	}
	if c := load(t, filepath.Join(dir, "short", "client.crt")); !c.NotAfter.Equal(short.Cert.NotAfter) {
		t.Errorf("leaf ends %v, CA %v", c.NotAfter, short.Cert.NotAfter)
	}
	if _, err := WriteSet(Options{Dir: filepath.Join(dir, "late"), CA: short, ClientOnly: true, Now: now.AddDate(0, 2, 0)}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired CA: %v", err)
	}
	// ClientOnly needs a CA.
	if _, err := WriteSet(Options{Dir: filepath.Join(dir, "none"), ClientOnly: true, Now: now}); err == nil {
		t.Error("client only without a CA")
	}
}

func TestLoadAuthorityErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteSet(Options{Dir: dir, Now: now}); err != nil {
		t.Fatal(err)
	}
	f := func(n string) string { return filepath.Join(dir, n) }
	for _, tc := range []struct{ cert, key, want string }{
		{f("rootCA.crt"), f("client.key"), "does not belong to CA certificate"},
		{f("client.crt"), f("client.key"), "not a CA certificate (CN=client.example)"},
		{f("rootCA.key"), f("rootCA.key"), `PEM block is "PRIVATE KEY", not CERTIFICATE`},
		{f("rootCA.crt"), f("missing.key"), "no such file"},
	} {
		if _, err := LoadAuthority(tc.cert, tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadAuthority(%s, %s): %v, want %q", tc.cert, tc.key, err, tc.want)
		}
	}
}

func TestCheckDNSName(t *testing.T) {
	for _, ok := range []string{"client.example", "bot-2.example.com", "localhost", "A.B", "xn--bcher-kva.example", strings.Repeat("a", 63) + ".example"} {
		if err := CheckDNSName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for name, want := range map[string]string{
		"":                              "empty DNS name",
		"bot example":                   `"bot example" is not a DNS name: ' ' is not allowed`,
		"bot_1.example":                 `'_' is not allowed`,
		"bot..example":                  "empty label",
		"bot.example.":                  "empty label",
		"-bot.example":                  "starts or ends with a hyphen",
		"*.example":                     `'*' is not allowed`,
		"bücher.example":                `'ü' is not ASCII`,
		"192.0.2.1":                     "is an IP address, not a DNS name",
		"::1":                           "is an IP address",
		strings.Repeat("a", 64) + ".x":  "longer than 63 characters",
		strings.Repeat("a.", 127) + "a": "longer than 253 characters",
	} {
		if err := CheckDNSName(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", name, err, want)
		}
	}
	for _, h := range []string{"192.0.2.7", "::1", "*.example.test", "example.test"} {
		if err := CheckHost(h); err != nil {
			t.Errorf("host %q: %v", h, err)
		}
	}
	if err := CheckHost("bad host"); err == nil {
		t.Error("host with a space accepted")
	}
	if _, err := WriteSet(Options{Dir: t.TempDir(), ClientName: "bot 2"}); err == nil || !strings.HasPrefix(err.Error(), `client name: "bot 2" is not a DNS name`) {
		t.Errorf("WriteSet with a bad client name: %v", err)
	}
}

func TestLoadKeyErrors(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"empty.pem": "",
		"cert.pem":  "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"bad.pem":   "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
	} {
		f := filepath.Join(dir, name)
		os.WriteFile(f, []byte(data), 0o600)
		if _, err := LoadKey(f); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := LoadKey(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("missing file loaded")
	}
}

// TestLoadCARootsRefusesLeaves: a leaf in a client CA bundle is refused at
// load time, with the file and the certificate named; the same bundle is a
// valid store of server roots for a client (LoadPool).
func TestLoadCARootsRefusesLeaves(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA(pkix.Name{CommonName: "bundle root"}, nil, nil, now, now.AddDate(1, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := ca.Issue(Leaf{Hosts: []string{"evil\n.example"}, CommonName: "pinned\nleaf", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: now, NotAfter: now.AddDate(0, 1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	good := filepath.Join(dir, "good.pem")
	mixed := filepath.Join(dir, "mixed.pem")
	os.WriteFile(good, pemOf(ca.Cert), 0o644)
	os.WriteFile(mixed, append(pemOf(ca.Cert), pemOf(leaf)...), 0o644)

	if roots, err := LoadCARoots(good); err != nil || len(roots) != 1 {
		t.Fatalf("CA bundle: %v, %d roots", err, len(roots))
	}
	_, err = LoadCARoots(mixed)
	want := `load CA bundle "` + mixed + `": certificate 2 (CN=pinned\nleaf) is not a CA certificate; a client CA bundle holds CA roots only`
	if err == nil || err.Error() != want {
		t.Fatalf("bundle with a leaf: %v\nwant %s", err, want)
	}
	if _, err := LoadPool(mixed); err != nil {
		t.Errorf("LoadPool (server roots) refused a leaf: %v", err)
	}
}
