package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/tlsclient"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// acmeEnv is pebble-challtestsrv answering DNS with 127.0.0.1 for every
// name, and the PKI whose server certificate pebble's own HTTPS uses.
type acmeEnv struct {
	p      pki
	dns    string
	pebble string
}

// startPebble runs pebble with its validation ports pointing at tlsPort
// (tls-alpn-01) and httpPort (http-01), certificates valid for validity,
// and returns its directory URL and management address.
func startPebble(t *testing.T, env *acmeEnv, tlsPort, httpPort string, validity int) (dirURL, mgmt string) {
	t.Helper()
	dir := t.TempDir()
	wfe, mgmt := freeAddr(t), freeAddr(t)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": wfe, "managementListenAddress": mgmt,
		"certificate": env.p.f("server.crt"), "privateKey": env.p.f("server.key"),
		"httpPort": atoiPort(httpPort), "tlsPort": atoiPort(tlsPort),
		"ocspResponderURL": "", "externalAccountBindingRequired": false,
		"certificateValidityPeriod": validity,
	}}
	b, _ := json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "pebble.json"), b, 0o600)
	cmd := exec.Command(env.pebble, "-config", filepath.Join(dir, "pebble.json"), "-dnsserver", env.dns)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	logf, _ := os.Create(filepath.Join(dir, "pebble.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListening(t, wfe, func() string { b, _ := os.ReadFile(filepath.Join(dir, "pebble.log")); return string(b) })
	return "https://" + wfe + "/dir", mgmt
}

func atoiPort(p string) int {
	n := 0
	for _, c := range p {
		n = n*10 + int(c-'0')
	}
	return n
}

// pebbleRoots returns the root pebble issues under (its management
// interface's /roots/0).
func pebbleRoots(t *testing.T, env *acmeEnv, mgmt string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	data, _ := os.ReadFile(env.p.f("rootCA.crt"))
	pool.AppendCertsFromPEM(data)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := hc.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pemBytes, _ := io.ReadAll(resp.Body)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("pebble root: %s", pemBytes)
	}
	return roots
}

// flaggedDebug makes a flagged handshake with the client certificate to
// addr with SNI name, trusting roots, and returns the served leaf and
// /debug's answer.
func flaggedDebug(t *testing.T, p pki, addr, name string, roots *x509.CertPool) (*x509.Certificate, string) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(90 * time.Second)) // the first handshake waits for the order
	cert, err := utls.LoadX509KeyPair(p.f("client.crt"), p.f("client.key"))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsclient.Hello{Flags: tlsflags.Must(80), NextProtos: []string{"http/1.1"}}.Client(raw,
		&utls.Config{RootCAs: roots, ServerName: name, Certificates: []utls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.Handshake(); err != nil {
		t.Fatalf("flagged handshake with %s: %v", name, err)
	}
	req, _ := http.NewRequest("GET", "https://"+name+"/debug", nil)
	req.Write(tc)
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return tc.ConnectionState().PeerCertificates[0], string(body)
}

// acmeServer runs the server binary with ACME for name.
func acmeServer(t *testing.T, env *acmeEnv, name, dirURL, cache, listen, httpListen string) (*exec.Cmd, func() string) {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "server.log")
	logf, _ := os.Create(logFile)
	cmd := exec.Command(filepath.Join(binDir, "server"), "-acme-domain", name, "-acme-directory", dirURL,
		"-acme-cacert", env.p.f("rootCA.crt"), "-acme-cache", cache, "-listen-addr", listen, "-http-addr", httpListen,
		"-client-cacert", env.p.f("rootCA.crt"), "-handshake-timeout", "90s", "-v")
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	logs := func() string { b, _ := os.ReadFile(logFile); return string(b) }
	waitListening(t, listen, logs)
	return cmd, logs
}

func describe(c *x509.Certificate) string {
	return "serial " + hex.EncodeToString(c.SerialNumber.Bytes()) + ", issuer " + c.Issuer.String() + ", not after " + c.NotAfter.UTC().Format(time.RFC3339)
}

// TestACMEPebble: certificates from Let's Encrypt's pebble, which really
// validates the challenges against the server (DNS from
// pebble-challtestsrv points every name at 127.0.0.1): tls-alpn-01 on the
// server's port while flagged clients keep being asked for their
// certificate; the cache reused across a restart; renewal of pebble's
// short-lived certificates while a connection stays open; http-01 on
// -http-addr.
func TestACMEPebble(t *testing.T) {
	env := &acmeEnv{p: newPKI(t), pebble: needPeer(t, "pebble")}
	chall := needPeer(t, "pebble-challtestsrv")
	env.dns = freeAddr(t)
	cts := exec.Command(chall, "-dns01", env.dns, "-http01", "", "-https01", "", "-tlsalpn01", "",
		"-management", freeAddr(t), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	if err := cts.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cts.Process.Kill(); cts.Wait() })
	waitListening(t, env.dns, func() string { return "pebble-challtestsrv" })

	const name = "bot-gateway.reqmtls.test"
	listen, httpListen := freeAddr(t), freeAddr(t)
	_, tlsPort, _ := net.SplitHostPort(listen)
	_, httpPort, _ := net.SplitHostPort(httpListen)
	dirURL, mgmt := startPebble(t, env, tlsPort, httpPort, 40)
	cache := filepath.Join(t.TempDir(), "acme")
	srv, logs := acmeServer(t, env, name, dirURL, cache, listen, httpListen)
	roots := pebbleRoots(t, env, mgmt)

	first, body := flaggedDebug(t, env.p, listen, name, roots)
	if !strings.Contains(body, "Client cert requested: true\nPeer certificate received: true\nCert received: client.example\nCert validated: true") {
		t.Fatalf("flagged client on the ACME certificate:\n%s", body)
	}
	if !strings.Contains(logs(), "ACME tls-alpn-01 validation connection answered") {
		t.Errorf("no tls-alpn-01 validation reached the server:\n%s", logs())
	}
	t.Logf("order for %s: validated by tls-alpn-01 on the server's port; flagged client asked and validated", name)
	t.Logf("served: %s", describe(first))
	if first.Subject.CommonName != name && (len(first.DNSNames) == 0 || first.DNSNames[0] != name) {
		t.Errorf("served certificate is for %v", first.DNSNames)
	}
	fi, err := os.Stat(cache)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("cache directory mode %v, %v", fi.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		info, _ := e.Info()
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("cache file %s mode %v", e.Name(), info.Mode().Perm())
		}
	}

	// A restart serves the cached certificate: no new order.
	srv.Process.Signal(os.Interrupt)
	srv.Wait()
	_, logs = acmeServer(t, env, name, dirURL, cache, listen, httpListen)
	again, _ := flaggedDebug(t, env.p, listen, name, roots)
	if again.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("after a restart: %s, want the cached %s", describe(again), describe(first))
	}
	t.Logf("restart: the cached certificate is served (same serial, no new order)")

	// Renewal while running: a connection opened before it keeps
	// working; new ones get the renewed certificate.
	keep, err := tls.Dial("tcp", listen, &tls.Config{RootCAs: roots, ServerName: name, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	br := bufio.NewReader(keep)
	get := func() error {
		req, _ := http.NewRequest("GET", "https://"+name+"/debug", nil)
		if err := req.Write(keep); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	var renewed *x509.Certificate
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if err := get(); err != nil {
			t.Fatalf("the connection opened before the renewal failed: %v", err)
		}
		c, _ := flaggedDebug(t, env.p, listen, name, roots)
		if c.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = c
			break
		}
	}
	if renewed == nil {
		t.Fatalf("no renewal within a minute:\n%s", logs())
	}
	if err := get(); err != nil {
		t.Fatalf("the connection opened before the renewal failed after it: %v", err)
	}
	t.Logf("renewed while running: before %s", describe(first))
	t.Logf("renewed while running: after  %s (the connection opened before kept working)", describe(renewed))

	// http-01: a second pebble whose tls-alpn-01 port leads nowhere, so
	// the order is validated on -http-addr.
	dead := freeAddr(t)
	_, deadPort, _ := net.SplitHostPort(dead)
	listen2, http2Listen := freeAddr(t), freeAddr(t)
	_, http2Port, _ := net.SplitHostPort(http2Listen)
	dir2, mgmt2 := startPebble(t, env, deadPort, http2Port, 3600)
	const name2 = "http01.reqmtls.test"
	_, logs2 := acmeServer(t, env, name2, dir2, filepath.Join(t.TempDir(), "acme"), listen2, http2Listen)
	roots2 := pebbleRoots(t, env, mgmt2)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("http-01 server log:\n%s", logs2())
		}
	})
	c2, body2 := flaggedDebug(t, env.p, listen2, name2, roots2)
	if !strings.Contains(body2, "Cert validated: true") {
		t.Errorf("flagged client on the http-01 certificate:\n%s", body2)
	}
	if strings.Contains(logs2(), "tls-alpn-01 validation connection answered") {
		t.Errorf("expected http-01 alone, the server answered tls-alpn-01:\n%s", logs2())
	}
	t.Logf("order for %s: validated by http-01 on -http-addr; served %s", name2, describe(c2))

	// Other requests on -http-addr are redirected to HTTPS.
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get("http://" + http2Listen + "/some/path")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
		t.Errorf("plain HTTP: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}
