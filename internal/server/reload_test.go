package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// startWatched starts a server on files with its file watch running.
func startWatched(t *testing.T, p *testpki.PKI, files Files) *testServer {
	ts := startServer(t, p, Config{Files: files})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ts.Watch(ctx)
	time.Sleep(100 * time.Millisecond) // let the watcher start
	return ts
}

// copyFile writes src's contents to dst by writing a temporary file and
// renaming it over dst, as certificate tools do.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeRename(t, dst, data)
}

func writeRename(t *testing.T, dst string, data []byte) {
	t.Helper()
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// servedCert returns the leaf the server presents now.
func servedCert(t *testing.T, ts *testServer, p *testpki.PKI) *x509.Certificate {
	t.Helper()
	o := fetch(t, ts, p, client.Config{}, "/debug")
	if o.err != nil {
		t.Fatalf("server stopped serving: %v", o.err)
	}
	return ts.state.Load().cert.Leaf
}

// waitFor polls cond until it holds; the watcher reacts in well under a
// second, and the bound only keeps a broken build from hanging.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// livePKI copies the server files into a directory of their own, which the
// test then changes under the running server.
func livePKI(t *testing.T, p *testpki.PKI) Files {
	dir := t.TempDir()
	f := Files{Cert: filepath.Join(dir, "server.crt"), Key: filepath.Join(dir, "server.key"), ClientCA: filepath.Join(dir, "ca.crt")}
	copyFile(t, p.ServerCert, f.Cert)
	copyFile(t, p.ServerKey, f.Key)
	copyFile(t, p.RootCA, f.ClientCA)
	return f
}

func TestReloadByRename(t *testing.T) {
	p, p2 := testpki.New(t), testpki.New(t)
	files := livePKI(t, p)
	ts := startWatched(t, p, files)

	first := servedCert(t, ts, p)
	// A new pair from another CA: the key first, then the certificate,
	// each by rename. In between, the pair mismatches, and the server
	// keeps the old one.
	copyFile(t, p2.ServerKey, files.Key)
	copyFile(t, p2.ServerCert, files.Cert)
	waitFor(t, "the new certificate", func() bool {
		return ts.state.Load().cert.Leaf.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if got := ts.state.Load().cert.Leaf; !bytes.Equal(got.Raw, mustPEM(t, p2.ServerCert)) {
		t.Fatalf("serving %v, want the new certificate", got.Subject)
	}
	waitFor(t, "a reload log line", func() bool {
		return strings.Contains(ts.logs.String(), `msg="reloaded certificates" trigger="file change"`)
	})
}

func mustPEM(t *testing.T, name string) []byte {
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	return b.Bytes
}

func TestReloadKeepsLastGood(t *testing.T) {
	p := testpki.New(t)
	files := livePKI(t, p)
	ts := startServer(t, p, Config{Files: files})
	good := ts.state.Load()
	for _, tc := range []struct {
		name   string
		break_ func()
	}{
		{"Truncated", func() { os.WriteFile(files.Cert, []byte("-----BEGIN CERTIFICATE-----\nMIIB"), 0o600) }},
		{"Missing", func() { os.Remove(files.Key) }},
		{"MismatchedKey", func() { copyFile(t, p.Clients["valid"][1], files.Key) }},
		{"BadCABundle", func() { os.WriteFile(files.ClientCA, []byte("not pem"), 0o600) }},
		{"KeyInCABundle", func() { copyFile(t, p.ServerKey, files.ClientCA) }},
		{"KeyInCertFile", func() { copyFile(t, p.ServerKey, files.Cert) }},
		{"Unreadable", func() { os.Chmod(files.Key, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "Unreadable" && os.Geteuid() == 0 {
				t.Skip("root reads files whatever their mode")
			}
			os.Chmod(files.Key, 0o600)
			copyFile(t, p.ServerCert, files.Cert)
			copyFile(t, p.ServerKey, files.Key)
			copyFile(t, p.RootCA, files.ClientCA)
			tc.break_()
			if err := ts.Reload("test"); err == nil {
				t.Fatal("reload of a broken file succeeded")
			}
			if ts.state.Load() != good {
				t.Fatal("state changed after a failed reload")
			}
			if o := fetch(t, ts, p, withCert(p, "valid", 80), "/debug"); o.err != nil || !strings.HasSuffix(o.body, "Cert validated: true\n") {
				t.Fatalf("not serving the last good state: %v\n%s", o.err, o.body)
			}
			if !strings.Contains(ts.logs.String(), "reload failed; keeping the last good certificates") {
				t.Error("no error logged")
			}
		})
	}
	// No secret reaches the log, whatever went wrong: not a line of the
	// private key's PEM body.
	keyPEM, _ := os.ReadFile(p.ServerKey)
	for _, line := range strings.Split(string(keyPEM), "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(ts.logs.String(), line) {
			t.Fatalf("private key material in the log: %q", line)
		}
	}
	if strings.Contains(ts.logs.String(), "PRIVATE KEY-----") {
		t.Fatal("a PEM private key block in the log")
	}
	// Good files again: the reload takes.
	copyFile(t, p.ServerCert, files.Cert)
	copyFile(t, p.ServerKey, files.Key)
	copyFile(t, p.RootCA, files.ClientCA)
	if err := ts.Reload("test"); err != nil {
		t.Fatal(err)
	}
}

// TestCARotation: old root alone, old and new side by side, new alone.
func TestCARotation(t *testing.T) {
	oldPKI, newPKI := testpki.New(t), testpki.New(t)
	files := livePKI(t, oldPKI)
	ts := startWatched(t, oldPKI, files)

	validated := func(p *testpki.PKI) bool {
		cfg := client.Config{Flags: tlsflags.Must(80), CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1]}
		o := fetch(t, ts, oldPKI, cfg, "/debug")
		if o.err != nil {
			t.Fatal(o.err)
		}
		return strings.HasSuffix(o.body, "Cert validated: true\n")
	}
	if !validated(oldPKI) || validated(newPKI) {
		t.Fatal("before rotation: want old valid, new invalid")
	}
	oldPEM, _ := os.ReadFile(oldPKI.RootCA)
	newPEM, _ := os.ReadFile(newPKI.RootCA)
	writeRename(t, files.ClientCA, append(append([]byte{}, oldPEM...), newPEM...))
	waitFor(t, "both roots", func() bool { return validated(newPKI) })
	if !validated(oldPKI) {
		t.Error("old root dropped while both are in the bundle")
	}
	writeRename(t, files.ClientCA, newPEM)
	waitFor(t, "the old root to go", func() bool { return !validated(oldPKI) })
	if !validated(newPKI) {
		t.Error("new root lost")
	}
}

// TestWatchDirectoryRecreated: the directory removed and made again is
// watched again, and good files in it are loaded.
func TestWatchDirectoryRecreated(t *testing.T) {
	p, p2 := testpki.New(t), testpki.New(t)
	files := livePKI(t, p)
	ts := startWatched(t, p, files)
	first := ts.state.Load()
	dir := filepath.Dir(files.Cert)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed reload", func() bool { return strings.Contains(ts.logs.String(), "reload failed") })
	if ts.state.Load() != first {
		t.Fatal("state changed while files were gone")
	}
	servedCert(t, ts, p)
	os.MkdirAll(dir, 0o755)
	copyFile(t, p2.ServerCert, files.Cert)
	copyFile(t, p2.ServerKey, files.Key)
	copyFile(t, p2.RootCA, files.ClientCA)
	waitFor(t, "the files to load again", func() bool { return ts.state.Load().gen != first.gen })
	if !bytes.Equal(ts.state.Load().cert.Leaf.Raw, mustPEM(t, p2.ServerCert)) {
		t.Fatal("not serving the new certificate")
	}
}
