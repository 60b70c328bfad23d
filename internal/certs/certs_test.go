package certs

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

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
	if len(res.Files) != 6 || res.DemoRoot {
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
	if err != nil || res.DemoRoot {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "rootCA.key")); err == nil {
		t.Error("rootCA.key written for a caller's key")
	}
	if ChainsToDemoRoot(load(t, filepath.Join(dir, "client.crt"))) {
		t.Error("ordinary root taken for the demo root")
	}
	// A key recognised as the demo's (here: ours, by pointing the hash at
	// it; the real testRSA4096 is never shipped): the demo subject bytes.
	h, _ := SPKIHash(key.Public())
	defer func(old string) { demoKeyHash = old }(demoKeyHash)
	demoKeyHash = h
	dir = t.TempDir()
	res, err = WriteSet(Options{Dir: dir, CAKey: key, Now: now})
	if err != nil || !res.DemoRoot {
		t.Fatalf("%+v %v", res, err)
	}
	root := load(t, filepath.Join(dir, "rootCA.crt"))
	client := load(t, filepath.Join(dir, "client.crt"))
	if !bytes.Equal(root.RawSubject, DemoRootSubject) || !bytes.Equal(client.RawIssuer, DemoRootSubject) || !ChainsToDemoRoot(client) {
		t.Errorf("subject %x", root.RawSubject)
	}
	if root.Subject.String() != "OU=ACME,O=ACME Ltd,L=San Francisco,ST=California,C=US" {
		t.Errorf("subject %q", root.Subject)
	}
	if err := client.CheckSignatureFrom(root); err != nil {
		t.Error(err)
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
