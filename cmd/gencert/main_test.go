package main

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/certs"
)

// demoKey is the shipped copy of RFC 9500's testRSA4096.
const demoKey = "../../third_party/rfc9500/testRSA4096.key"

func runGencert(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestDemoKey: no root is ever made from testRSA4096 (the local root must
// not be one anyone can sign under); -client-only issues a client
// certificate under the public demo's root, which -check-demo accepts.
func TestDemoKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	code, _, stderr := runGencert("-ca-key", demoKey, "-dir", dir)
	if code != 1 || !strings.Contains(stderr, "a root made from it would trust certificates anyone can make") {
		t.Fatalf("root from testRSA4096: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("files written after the refusal")
	}
	code, stdout, stderr := runGencert("-ca-key", demoKey, "-client-only", "-dir", dir)
	want := "wrote " + filepath.Join(dir, "client.crt") + "\nwrote " + filepath.Join(dir, "client.key") + "\n" +
		"the client certificate is issued under the public demo's root (RFC 9500's testRSA4096, a public test key: it identifies no one)\n"
	if code != 0 || stdout != want {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	crt := filepath.Join(dir, "client.crt")
	if code, stdout, _ := runGencert("-check-demo", crt, "-ca-key", demoKey); code != 0 || !strings.Contains(stdout, "signed by testRSA4096") {
		t.Errorf("check-demo with the key: exit %d, %s", code, stdout)
	}
	if code, _, _ := runGencert("-check-demo", crt); code != 0 {
		t.Errorf("check-demo: exit %d", code)
	}

	// A local set is not under the demo's root, and -check-demo says so.
	local := filepath.Join(t.TempDir(), "certs")
	if code, _, stderr := runGencert("-dir", local); code != 0 {
		t.Fatal(stderr)
	}
	code, _, stderr = runGencert("-check-demo", filepath.Join(local, "client.crt"))
	if code != 1 || !strings.Contains(stderr, `is issued by "CN=req-mtls development root,O=req-mtls development CA", not under the public demo's root`) {
		t.Errorf("local client: exit %d, %s", code, stderr)
	}
	// The demo's certificate checked against another key: refused.
	code, _, stderr = runGencert("-check-demo", crt, "-ca-key", filepath.Join(local, "rootCA.key"))
	if code != 1 || !strings.Contains(stderr, "the key is not RFC 9500's testRSA4096") {
		t.Errorf("other key: exit %d, %s", code, stderr)
	}
}

// TestCheckRoot: a root made from testRSA4096 (as this project's older
// gencert made with -ca-key) is found in a bundle; a local root passes.
func TestCheckRoot(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runGencert("-dir", dir); code != 0 {
		t.Fatal(stderr)
	}
	local := filepath.Join(dir, "rootCA.crt")
	if code, stdout, stderr := runGencert("-check-root", local); code != 0 || !strings.Contains(stdout, "no certificate has a public test key") {
		t.Errorf("local root: exit %d, %s%s", code, stdout, stderr)
	}
	key, err := certs.LoadKey(demoKey)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old demo root"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(local)
	bundle := filepath.Join(dir, "bundle.pem")
	os.WriteFile(bundle, append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...), 0o644)
	code, _, stderr := runGencert("-check-root", bundle)
	if want := "certificate 2 (CN=old demo root) has RFC 9500's testRSA4096 as its key"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("demo root: exit %d, %s", code, stderr)
	}
	if code, _, _ := runGencert("-check-root", filepath.Join(dir, "missing.pem")); code != 1 {
		t.Errorf("missing file: exit %d", code)
	}
}
