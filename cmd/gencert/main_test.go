package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
