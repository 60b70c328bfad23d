package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
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

// servedCert returns the leaf the server presents now, read from a real
// handshake (not from the server's state).
func servedCert(t *testing.T, ts *testServer) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", ts.url.Host, &tls.Config{Time: testpki.Clock, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("server stopped serving: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
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

	first := servedCert(t, ts)
	// A new pair from another CA: the key first, then the certificate,
	// each by rename. In between, the pair mismatches, and the server
	// keeps the old one.
	copyFile(t, p2.ServerKey, files.Key)
	copyFile(t, p2.ServerCert, files.Cert)
	waitFor(t, "the new certificate", func() bool {
		return servedCert(t, ts).SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if got := servedCert(t, ts); !bytes.Equal(got.Raw, mustPEM(t, p2.ServerCert)) {
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

// TestReloadKeepsLastGood: a broken file keeps its part's last good state
// (and the server serves it); the other parts load. Unreadable files are
// TestReloadUnreadable's.
func TestReloadKeepsLastGood(t *testing.T) {
	p := testpki.New(t)
	files := livePKI(t, p)
	ts := startServer(t, p, Config{Files: files})
	good := servedCert(t, ts)
	for _, tc := range []struct {
		name   string
		break_ func()
	}{
		{"Truncated", func() { os.WriteFile(files.Cert, []byte("-----BEGIN CERTIFICATE-----\nMIIB"), 0o600) }},
		{"Missing", func() { os.Remove(files.Key) }},
		{"MismatchedKey", func() { copyFile(t, p.Clients["valid"][1], files.Key) }},
		{"KeyInCertFile", func() { copyFile(t, p.ServerKey, files.Cert) }},
		{"BadCABundle", func() { os.WriteFile(files.ClientCA, []byte("not pem"), 0o600) }},
		{"KeyInCABundle", func() { copyFile(t, p.ServerKey, files.ClientCA) }},
		{"LeafInCABundle", func() { copyFile(t, p.Clients["valid"][0], files.ClientCA) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			restore(t, p, files)
			tc.break_()
			if err := ts.Reload("test"); err == nil {
				t.Fatal("reload of a broken file succeeded")
			}
			// The server certificate and the client CA in force are
			// the last good ones.
			if !servedCert(t, ts).Equal(good) {
				t.Fatal("the served certificate changed after a failed reload")
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
	restore(t, p, files)
	if err := ts.Reload("test"); err != nil {
		t.Fatal(err)
	}
}

// restore puts p's good files back in place.
func restore(t *testing.T, p *testpki.PKI, files Files) {
	t.Helper()
	copyFile(t, p.ServerCert, files.Cert)
	copyFile(t, p.ServerKey, files.Key)
	copyFile(t, p.RootCA, files.ClientCA)
}

// TestReloadUnreadable: a file the server may not read keeps the last good
// state. Root reads any file, so as root the test runs itself again as an
// unprivileged user (setpriv, from util-linux), never skipping.
func TestReloadUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		rerunUnprivileged(t)
		return
	}
	p := testpki.New(t)
	files := livePKI(t, p)
	ts := startServer(t, p, Config{Files: files})
	good := servedCert(t, ts)
	if err := os.Chmod(files.Key, 0); err != nil {
		t.Fatal(err)
	}
	err := ts.Reload("test")
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("reload of an unreadable key: %v, want permission denied", err)
	}
	if !servedCert(t, ts).Equal(good) {
		t.Fatal("server certificate changed after a failed reload")
	}
	if o := fetch(t, ts, p, withCert(p, "valid", 80), "/debug"); o.err != nil || !strings.HasSuffix(o.body, "Cert validated: true\n") {
		t.Fatalf("not serving the last good state: %v\n%s", o.err, o.body)
	}
	os.Chmod(files.Key, 0o600)
	if err := ts.Reload("test"); err != nil {
		t.Fatalf("readable again: %v", err)
	}
}

// rerunUnprivileged runs the calling test in a copy of the test binary as
// user and group 65534 (nobody), and fails with its output if it fails.
func rerunUnprivileged(t *testing.T) {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("running as root, and setpriv (util-linux) is needed to run this test unprivileged: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "req-mtls-unprivileged")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "server.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		bin, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+os.TempDir(), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
	t.Logf("ran as uid 65534:\n%s", out)
}

// TestPartsReloadIndependently: with server.crt half-written, a rotated
// client CA bundle is still picked up by the file watch.
func TestPartsReloadIndependently(t *testing.T) {
	p, p2 := testpki.New(t), testpki.New(t)
	files := livePKI(t, p)
	ts := startWatched(t, p, files)
	first := servedCert(t, ts)
	os.WriteFile(files.Cert, []byte("-----BEGIN CERTIFICATE-----\nMIIB"), 0o644)
	copyFile(t, p2.RootCA, files.ClientCA)
	waitFor(t, "the new client CA", func() bool {
		return strings.HasSuffix(fetch(t, ts, p, withCert(p2, "valid", 80), "/debug").body, "Cert validated: true\n")
	})
	if !servedCert(t, ts).Equal(first) {
		t.Fatal("server certificate changed while its file was broken")
	}
	if !strings.Contains(ts.logs.String(), `part="server certificate"`) {
		t.Errorf("the failing part is not named in the log:\n%s", ts.logs)
	}
}

// TestReloadKubernetesVolume: files laid out as the kubelet lays out Secret
// and ConfigMap volumes (a timestamped directory, a "..data" symlink to it,
// and each file a symlink into "..data") are reloaded when "..data" is
// swapped atomically, although no event names the files.
func TestReloadKubernetesVolume(t *testing.T) {
	p, p2 := testpki.New(t), testpki.New(t)
	vol := t.TempDir()
	// project writes one version of the volume and points ..data at it.
	project := func(stamp string, pk *testpki.PKI) {
		dir := filepath.Join(vol, "..2026_11_22_10_00_"+stamp)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, pk.ServerCert, filepath.Join(dir, "tls.crt"))
		copyFile(t, pk.ServerKey, filepath.Join(dir, "tls.key"))
		copyFile(t, pk.RootCA, filepath.Join(dir, "ca.crt"))
		tmp := filepath.Join(vol, "..data_tmp")
		if err := os.Symlink(filepath.Base(dir), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(vol, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	project("00.000000001", p)
	for _, f := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(vol, f)); err != nil {
			t.Fatal(err)
		}
	}
	files := Files{Cert: filepath.Join(vol, "tls.crt"), Key: filepath.Join(vol, "tls.key"), ClientCA: filepath.Join(vol, "ca.crt")}
	ts := startWatched(t, p, files)
	first := servedCert(t, ts)

	project("30.000000002", p2)
	os.RemoveAll(filepath.Join(vol, "..2026_11_22_10_00_00.000000001"))
	waitFor(t, "the projected certificate", func() bool { return !servedCert(t, ts).Equal(first) })
	if !bytes.Equal(servedCert(t, ts).Raw, mustPEM(t, p2.ServerCert)) {
		t.Fatal("not serving the new certificate")
	}
	if !strings.HasSuffix(fetch(t, ts, p2, withCert(p2, "valid", 80), "/debug").body, "Cert validated: true\n") {
		t.Error("the projected client CA was not loaded")
	}
}

// TestReloadBackstop: a change that no watched directory sees (a symlink
// in an unwatched directory, between the configured name and the file) is
// found by the periodic comparison.
func TestReloadBackstop(t *testing.T) {
	p, p2 := testpki.New(t), testpki.New(t)
	base := t.TempDir()
	a, b, c1, c2 := filepath.Join(base, "a"), filepath.Join(base, "b"), filepath.Join(base, "c1"), filepath.Join(base, "c2")
	for _, d := range []string{a, b, c1, c2} {
		os.Mkdir(d, 0o755)
	}
	copyFile(t, p.ServerCert, filepath.Join(c1, "server.crt"))
	copyFile(t, p2.ServerCert, filepath.Join(c2, "server.crt"))
	// a/server.crt -> b/link -> c1/server.crt; then b/link moves to c2.
	os.Symlink(filepath.Join(b, "link"), filepath.Join(a, "server.crt"))
	os.Symlink(filepath.Join(c1, "server.crt"), filepath.Join(b, "link"))
	files := Files{Cert: filepath.Join(a, "server.crt"), Key: filepath.Join(base, "server.key"), ClientCA: filepath.Join(base, "ca.crt")}
	copyFile(t, p.ServerKey, files.Key)
	copyFile(t, p.RootCA, files.ClientCA)
	ts := startServer(t, p, Config{Files: files, RecheckInterval: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ts.Watch(ctx)
	first := servedCert(t, ts)

	// The matching key first (a mismatched pair is refused), then the
	// link swap that only b sees.
	copyFile(t, p2.ServerKey, files.Key)
	tmp := filepath.Join(b, "link.tmp")
	os.Symlink(filepath.Join(c2, "server.crt"), tmp)
	os.Rename(tmp, filepath.Join(b, "link"))
	waitFor(t, "the backstop reload", func() bool { return !servedCert(t, ts).Equal(first) })
	if !strings.Contains(ts.logs.String(), `msg="reloaded certificates" trigger=recheck`) {
		t.Errorf("no backstop reload in the log:\n%s", ts.logs)
	}
}

// TestCARotation: old root alone, old and new side by side, new alone,
// under require: the handshake itself accepts or refuses the certificate.
func TestCARotation(t *testing.T) {
	oldPKI, newPKI := testpki.New(t), testpki.New(t)
	files := livePKI(t, oldPKI)
	ts := startServer(t, oldPKI, Config{Policy: PolicyRequire, Files: files})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ts.Watch(ctx)
	time.Sleep(100 * time.Millisecond) // let the watcher start

	// accepted reports whether a flagged client with p's certificate
	// completes the handshake; a refusal must be the handshake's.
	cuts := 0
	accepted := func(p *testpki.PKI) bool {
		cfg := client.Config{Time: testpki.Clock, Flags: tlsflags.Must(80), CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1]}
		// A reload that lands between the handshake and the request
		// makes the server close the connection (its certificate no
		// longer validates): how the client sees that depends on where
		// it was (EOF, reset, an HTTP/2 connection never established).
		// Such a cut is accepted only when the server logged it; then
		// the client asks again.
		const cutLog = "closing connection: its client certificate no longer validates"
		o := fetch(t, ts, oldPKI, cfg, "/debug")
		for try := 0; try < 5 && o.err != nil && !strings.Contains(o.err.Error(), "server rejected the client certificate"); try++ {
			if n := strings.Count(ts.logs.String(), cutLog); n <= cuts {
				t.Fatalf("failed otherwise than by refusing the certificate, with no connection closed by a reload: %v", o.err)
			} else {
				cuts = n
			}
			t.Logf("a reload cut the connection (%v); asking again", o.err)
			o = fetch(t, ts, oldPKI, cfg, "/debug")
		}
		if o.err != nil {
			if !strings.Contains(o.err.Error(), "server rejected the client certificate") {
				t.Fatalf("failed otherwise than by refusing the certificate: %v", o.err)
			}
			return false
		}
		if !strings.HasSuffix(o.body, "Cert validated: true\n") {
			t.Fatalf("handshake accepted a certificate that /debug calls invalid:\n%s", o.body)
		}
		return true
	}
	if !accepted(oldPKI) || accepted(newPKI) {
		t.Fatal("before rotation: want old accepted, new refused")
	}
	oldPEM, _ := os.ReadFile(oldPKI.RootCA)
	newPEM, _ := os.ReadFile(newPKI.RootCA)
	writeRename(t, files.ClientCA, append(append([]byte{}, oldPEM...), newPEM...))
	waitFor(t, "both roots", func() bool { return accepted(newPKI) })
	if !accepted(oldPKI) {
		t.Error("old root dropped while both are in the bundle")
	}
	writeRename(t, files.ClientCA, newPEM)
	waitFor(t, "the old root to go", func() bool { return !accepted(oldPKI) })
	if !accepted(newPKI) {
		t.Error("new root lost")
	}
}

// TestWatchDirectoryRecreated: the directory removed and made again is
// watched again, and good files in it are loaded.
func TestWatchDirectoryRecreated(t *testing.T) {
	p, p2 := testpki.New(t), testpki.New(t)
	files := livePKI(t, p)
	ts := startWatched(t, p, files)
	first := servedCert(t, ts)
	dir := filepath.Dir(files.Cert)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failed reload", func() bool { return strings.Contains(ts.logs.String(), "reload failed") })
	if !servedCert(t, ts).Equal(first) {
		t.Fatal("served certificate changed while files were gone")
	}
	os.MkdirAll(dir, 0o755)
	copyFile(t, p2.ServerCert, files.Cert)
	copyFile(t, p2.ServerKey, files.Key)
	copyFile(t, p2.RootCA, files.ClientCA)
	waitFor(t, "the files to load again", func() bool { return !servedCert(t, ts).Equal(first) })
	if !bytes.Equal(servedCert(t, ts).Raw, mustPEM(t, p2.ServerCert)) {
		t.Fatal("not serving the new certificate")
	}
}

// TestTrustStoreChangeReachesOpenConnections: after a reload that removes
// the root a connection's certificate was accepted under, an enforcing
// policy closes that HTTP/2 connection; under request it stays, and /debug
// reports the handshake's decision, with the JSON adding that the
// certificate no longer validates.
func TestTrustStoreChangeReachesOpenConnections(t *testing.T) {
	for _, tc := range []struct {
		policy     Policy
		wantClosed bool
	}{
		{PolicyRequest, false},
		{PolicyVerify, true},
		{PolicyRequire, true},
		{PolicyAlways, true},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			p, other := testpki.New(t), testpki.New(t)
			files := livePKI(t, p)
			ts := startServer(t, p, Config{Policy: tc.policy, Files: files})
			pool := x509.NewCertPool()
			pool.AddCert(p.CA.Cert)
			cfg := withCert(p, "valid", 80)
			cfg.RootCAs = pool
			cl, err := client.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			cn, err := cl.Dial(ctx, ts.url)
			if err != nil {
				t.Fatal(err)
			}
			defer cn.Close()
			get := func(query string) (string, error) {
				u := *ts.url
				u.RawQuery = query
				req, _ := http.NewRequest("GET", u.String(), nil)
				_, body, err := cl.Do(ctx, cn, req, 1<<20)
				return string(body), err
			}
			if body, err := get(""); err != nil || !strings.HasSuffix(body, "Cert validated: true\n") {
				t.Fatalf("before the reload: %v\n%s", err, body)
			}
			copyFile(t, other.RootCA, files.ClientCA)
			if err := ts.Reload("test"); err != nil {
				t.Fatal(err)
			}
			body, err := get("")
			if tc.wantClosed {
				if err == nil {
					t.Fatalf("connection still served after its root was removed:\n%s", body)
				}
				if !strings.Contains(ts.logs.String(), "closing connection: its client certificate no longer validates") {
					t.Errorf("no log line for the closed connection:\n%s", ts.logs)
				}
				return
			}
			if err != nil || !strings.HasSuffix(body, "Cert validated: true\n") {
				t.Fatalf("under request, after the reload: %v\n%s", err, body)
			}
			js, err := get("format=json")
			if err != nil || !strings.Contains(js, `"cert_validated": true`) || !strings.Contains(js, `"cert_validates_now": false`) {
				t.Fatalf("JSON after the reload: %v\n%s", err, js)
			}
		})
	}
}
