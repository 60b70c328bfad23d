package reqmtls

// Tests of the forward proxy through the public API: a real site with
// request mTLS on loopback, the proxy served on a listener, clients that
// CONNECT by hand.

import (
	"bufio"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/testutil"
)

// fpSite serves h over TLS with request mTLS (the certificate asked for
// when flag 80 comes) on loopback, and returns its address.
func fpSite(t *testing.T, p *testpki.PKI, h http.Handler, opts ...func(*tls.Config)) string {
	t.Helper()
	return testutil.ServeRequestMTLS(t, p, time.Now, h, opts...)
}

// farAddr is the address a far listener says it listens on: what a proxy
// on a network interface sees, though the test stays on loopback.
var farAddr = netip.MustParseAddr("192.0.2.10")

// farListener is a loopback listener whose connections say they came in
// on farAddr.
type farListener struct{ net.Listener }

func (l farListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return farConn{c}, nil
}

type farConn struct{ net.Conn }

func (c farConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: farAddr.AsSlice(), Port: c.Conn.LocalAddr().(*net.TCPAddr).Port}
}

// fpProxy serves a ForwardProxy with cfg (its CADir, client roots and
// logger filled in) on loopback, or, with far, on a listener that looks
// off loopback. It returns the proxy's address and its root.
func fpProxy(t *testing.T, p *testpki.PKI, cfg ForwardProxyConfig, far bool) (string, *x509.CertPool) {
	t.Helper()
	cfg.CADir = t.TempDir()
	if cfg.Client.RootCAs == nil {
		cfg.Client.RootCAs = x509.NewCertPool()
		cfg.Client.RootCAs.AddCert(p.CA.Cert)
	}
	if cfg.Client.Proxy == nil {
		cfg.Client.Proxy = NoProxy
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	fp, err := NewForwardProxy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if far {
		ln = farListener{ln}
	}
	srv := &http.Server{Handler: fp}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	pool := x509.NewCertPool()
	pool.AddCert(fp.RootCertificate())
	return addr, pool
}

// fpConnect sends CONNECT target to the proxy and returns its answer,
// with the connection, open, when it is a 200.
func fpConnect(t *testing.T, proxy, target string) (*http.Response, string, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	var body []byte
	if resp.StatusCode != http.StatusOK {
		body, _ = io.ReadAll(resp.Body)
	}
	return resp, string(body), c, br
}

// fpTunnel opens a CONNECT tunnel to target, speaks TLS in it trusting the
// proxy's root for serverName, and sends req over HTTP/1.1.
func fpTunnel(t *testing.T, proxy, target, serverName string, root *x509.CertPool, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, body, c, br := fpConnect(t, proxy, target)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %s %s", target, resp.Status, body)
	}
	pc := &bufConn{Conn: c, r: br}
	tc := tls.Client(pc, &tls.Config{RootCAs: root, ServerName: serverName, NextProtos: []string{"http/1.1"}})
	if err := req.Write(tc); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		t.Fatalf("%s %s in the tunnel: %v", req.Method, req.URL, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func fpGet(t *testing.T, u, host string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	return req
}

// TestForwardProxyDestinations: a client that reaches the proxy off
// loopback cannot reach loopback, link-local, unspecified addresses or the
// proxy's own, by address or by a name that resolves to one (a 403 that
// says why, whatever the port); AllowDestinations opens them; a client on
// loopback goes anywhere.
func TestForwardProxyDestinations(t *testing.T) {
	p := testpki.NewAt(t, time.Now())
	site := fpSite(t, p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "site reached") }))
	_, port, _ := net.SplitHostPort(site)
	closed := freePort(t)

	proxy, root := fpProxy(t, p, ForwardProxyConfig{}, true)
	for _, target := range []string{site, "127.0.0.1:" + closed, "[::1]:" + port, "127.1.2.3:" + port, "169.254.169.254:80",
		"[fe80::1]:80", "0.0.0.0:" + port, "[::]:" + port, "0.1.2.3:80", "[::ffff:127.0.0.1]:" + port, net.JoinHostPort(farAddr.String(), port)} {
		resp, body, _, _ := fpConnect(t, proxy, target)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "refused to clients that reach the proxy from the network") {
			t.Errorf("far client, CONNECT %s: %s %q", target, resp.Status, body)
		}
	}
	// An absolute http:// URL, the same.
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET http://127.0.0.1:%s/ HTTP/1.1\r\nHost: 127.0.0.1:%s\r\n\r\n", port, port)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("far client, GET http://127.0.0.1: %v %v", resp, err)
	}
	// A name that resolves to loopback: refused when it is resolved, the
	// 403 inside the tunnel.
	resp, body := fpTunnel(t, proxy, "localhost:"+port, "localhost", root, fpGet(t, "https://localhost:"+port+"/", ""))
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "is a loopback address") {
		t.Errorf("far client, localhost: %s %q", resp.Status, body)
	}

	// AllowDestinations opens them.
	open, root2 := fpProxy(t, p, ForwardProxyConfig{AllowDestinations: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}, true)
	for _, target := range []string{site, "localhost:" + port} {
		host, _, _ := net.SplitHostPort(target)
		resp, body := fpTunnel(t, open, target, host, root2, fpGet(t, "https://"+target+"/", ""))
		if resp.StatusCode != http.StatusOK || body != "site reached" {
			t.Errorf("far client, loopback allowed, %s: %s %q", target, resp.Status, body)
		}
	}
	// A client on loopback goes anywhere.
	near, root3 := fpProxy(t, p, ForwardProxyConfig{}, false)
	resp, body = fpTunnel(t, near, site, "127.0.0.1", root3, fpGet(t, "https://"+site+"/", ""))
	if resp.StatusCode != http.StatusOK || body != "site reached" {
		t.Errorf("near client: %s %q", resp.Status, body)
	}
}

// freePort is a loopback port nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}

// TestForwardProxyHostMismatch: inside a tunnel to the CONNECT target, a
// request whose Host names another authority is a 421, never sent (nor
// signed for that authority); the target's own name in any case, with or
// without its default port, goes through.
func TestForwardProxyHostMismatch(t *testing.T) {
	p := testpki.NewAt(t, time.Now())
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	site := fpSite(t, p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s signed=%t", r.Host, r.Header.Get("Signature-Input") != "")
	}))
	_, port, _ := net.SplitHostPort(site)
	proxy, root := fpProxy(t, p, ForwardProxyConfig{Client: ClientConfig{SignatureKey: key}}, false)
	target := "localhost:" + port
	for _, tc := range []struct {
		host, want string
		status     int
	}{
		{"victim.example", "", http.StatusMisdirectedRequest},
		{"victim.example:" + port, "", http.StatusMisdirectedRequest},
		{"localhost:1", "", http.StatusMisdirectedRequest},
		{"localhost", "", http.StatusMisdirectedRequest}, // the port is not 443
		{"LocalHost:" + port, "host=LocalHost:" + port + " signed=true", http.StatusOK},
		{"localhost.:" + port, "host=localhost.:" + port + " signed=true", http.StatusOK},
	} {
		resp, body := fpTunnel(t, proxy, target, "localhost", root, fpGet(t, "https://"+target+"/", tc.host))
		if resp.StatusCode != tc.status || tc.want != "" && body != tc.want ||
			tc.status == http.StatusMisdirectedRequest && !strings.Contains(body, "the tunnel goes to "+target) {
			t.Errorf("Host %q in a tunnel to %s: %s %q", tc.host, target, resp.Status, body)
		}
	}
}

// TestForwardProxyCertRequestedHeader: Req-Mtls-Cert-Requested says ?1 when
// the site asked for the certificate, whatever the case of the CONNECT
// host.
func TestForwardProxyCertRequestedHeader(t *testing.T) {
	p := testpki.NewAt(t, time.Now())
	site := fpSite(t, p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "cert=%t", r.TLS != nil && len(r.TLS.PeerCertificates) > 0)
	}))
	_, port, _ := net.SplitHostPort(site)
	proxy, root := fpProxy(t, p, ForwardProxyConfig{Client: ClientConfig{Flags: RequestMTLSFlags,
		CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1]}}, false)
	for _, host := range []string{"localhost", "LOCALHOST", "LocalHost"} {
		target := host + ":" + port
		resp, body := fpTunnel(t, proxy, target, "localhost", root, fpGet(t, "https://"+target+"/", ""))
		if got := resp.Header.Get("Req-Mtls-Cert-Requested"); resp.StatusCode != http.StatusOK || body != "cert=true" || got != "?1" {
			t.Errorf("CONNECT %s: %s %q, %s: %q", target, resp.Status, body, "Req-Mtls-Cert-Requested", got)
		}
	}
}

// TestForwardProxyCertRequestedNotSpoofed: Req-Mtls-Cert-Requested is the
// proxy's alone: an origin that sends it in a plain http:// response, or
// as an HTTP/1.1 trailer (announced or not), is overruled (?0 for plain
// HTTP, where no certificate is ever asked for) and its trailer dropped.
func TestForwardProxyCertRequestedNotSpoofed(t *testing.T) {
	const name = "Req-Mtls-Cert-Requested"
	p := testpki.NewAt(t, time.Now())
	spoof := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/header":
			w.Header().Set(name, "?1")
		case "/trailer":
			w.Header().Set("Trailer", name)
			io.WriteString(w, "body")
			w.Header().Set(name, "?1")
			return
		case "/undeclared":
			io.WriteString(w, "body")
			w.Header().Set(http.TrailerPrefix+name, "?1")
			return
		}
		io.WriteString(w, "body")
	})
	site := fpSite(t, p, spoof)
	h1Site := fpSite(t, p, spoof, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plainSrv := &http.Server{Handler: spoof}
	go plainSrv.Serve(plainLn)
	defer plainSrv.Close()
	// No flags: the site never asks for the certificate.
	proxy, root := fpProxy(t, p, ForwardProxyConfig{}, false)

	for _, s := range []string{site, h1Site} {
		for _, path := range []string{"/header", "/trailer", "/undeclared"} {
			resp, body := fpTunnel(t, proxy, s, "127.0.0.1", root, fpGet(t, "https://"+s+path, ""))
			if resp.StatusCode != http.StatusOK || body != "body" || resp.Header.Get(name) != "?0" || len(resp.Trailer) != 0 {
				t.Errorf("https %s%s: %s %q, header %q, trailers %v", s, path, resp.Status, body, resp.Header.Get(name), resp.Trailer)
			}
		}
	}
	c := &http.Client{Transport: &http.Transport{Proxy: func(*http.Request) (*url.URL, error) { return &url.URL{Scheme: "http", Host: proxy}, nil }}}
	for _, path := range []string{"/header", "/trailer", "/undeclared"} {
		resp, err := c.Get("http://" + plainLn.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "body" || resp.Header.Get(name) != "?0" || len(resp.Trailer) != 0 {
			t.Errorf("http %s: %s %q, header %q, trailers %v", path, resp.Status, b, resp.Header.Get(name), resp.Trailer)
		}
	}
}

// TestForwardProxyCANotMadeOnBadKeyPair: a client key pair that does not
// load fails NewForwardProxy before the root is made: no CA directory is
// left behind for a proxy that never ran.
func TestForwardProxyCANotMadeOnBadKeyPair(t *testing.T) {
	p := testpki.New(t)
	dir := filepath.Join(t.TempDir(), "ca")
	_, err := NewForwardProxy(ForwardProxyConfig{CADir: dir, Client: ClientConfig{CertFile: p.ServerCert, KeyFile: filepath.Join(t.TempDir(), "missing.key")}})
	if err == nil {
		t.Fatal("NewForwardProxy with a missing key: no error")
	}
	if _, serr := os.Stat(dir); !errors.Is(serr, fs.ErrNotExist) {
		t.Errorf("NewForwardProxy failed (%v) but made %s: %v", err, dir, serr)
	}
}

// TestForwardProxyPlainHTTPInTunnel: plain HTTP inside a CONNECT tunnel
// (what ws:// clients send through a proxy) is relayed to the target, an
// upgrade included, with Req-Mtls-Cert-Requested ?0; a Host for another
// authority is a 421 there too.
func TestForwardProxyPlainHTTPInTunnel(t *testing.T) {
	p := testpki.New(t)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			fmt.Fprintf(w, "plain %s %s", r.Host, r.URL.Path)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
	}))
	defer origin.Close()
	target := strings.TrimPrefix(origin.URL, "http://")
	proxy, _ := fpProxy(t, p, ForwardProxyConfig{}, false)

	send := func(raw string) (*http.Response, string, net.Conn, *bufio.Reader) {
		t.Helper()
		resp, body, c, br := fpConnect(t, proxy, target)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT %s: %s %s", target, resp.Status, body)
		}
		io.WriteString(c, raw)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("plain HTTP in a tunnel: %v", err)
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, "", c, br
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b), c, br
	}
	resp, body, _, _ := send("GET /path HTTP/1.1\r\nHost: " + target + "\r\n\r\n")
	if resp.StatusCode != http.StatusOK || body != "plain "+target+" /path" || resp.Header.Get("Req-Mtls-Cert-Requested") != "?0" {
		t.Errorf("GET in a plain tunnel: %s %q %q", resp.Status, body, resp.Header.Get("Req-Mtls-Cert-Requested"))
	}
	resp, body, _, _ = send("GET / HTTP/1.1\r\nHost: victim.example\r\n\r\n")
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("another Host in a plain tunnel: %s %q", resp.Status, body)
	}
	resp, _, c, br := send("GET /ws HTTP/1.1\r\nHost: " + target + "\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade in a plain tunnel: %s", resp.Status)
	}
	io.WriteString(c, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Errorf("upgraded plain tunnel: %q, %v", got, err)
	}
}

// TestForwardProxyConnectTarget: a CONNECT target that is not host:port
// with a DNS name or an IP address and a port from 1 to 65535 is a 400
// that says why; good ones open a tunnel.
func TestForwardProxyConnectTarget(t *testing.T) {
	p := testpki.New(t)
	proxy, _ := fpProxy(t, p, ForwardProxyConfig{}, false)
	for target, want := range map[string]string{
		"*.com:443":                             `host "*.com" is not a DNS name or an IP address`,
		"example.com:0":                         `port "0" is not a number from 1 to 65535`,
		"example.com:99999":                     `port "99999" is not a number from 1 to 65535`,
		"example.com:https":                     "", // net/http's own 400
		"example.com:+443":                      "",
		strings.Repeat("a.", 35000) + "com:443": "is longer than 253 characters",
		strings.Repeat("a", 64) + ".com:443":    "a label is longer than 63 characters",
		"-bad.example:443":                      `host "-bad.example" is not a DNS name or an IP address`,
		"bad-.example:443":                      `host "bad-.example" is not a DNS name or an IP address`,
		"a..b:443":                              `host "a..b" is not a DNS name or an IP address`,
		"bad!.example:443":                      `host "bad!.example" is not a DNS name or an IP address`,
		"[fe80::1%25eth0]:443":                  `is not a DNS name or an IP address`,
		"example.com":                           "want host:port",
	} {
		resp, body, _, _ := fpConnect(t, proxy, target)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, want) {
			name := target
			if len(name) > 40 {
				name = name[:40] + "..."
			}
			t.Errorf("CONNECT %s: %s %.200q, want 400 with %q", name, resp.Status, body, want)
		}
	}
	for _, target := range []string{"localhost:1", "127.0.0.1:443", "[::1]:8443", "Example.COM.:65535", "under_score.example:443",
		strings.Repeat("a", 63) + ".example:443", "xn--bcher-kva.example:443"} {
		if resp, body, _, _ := fpConnect(t, proxy, target); resp.StatusCode != http.StatusOK {
			t.Errorf("CONNECT %s: %s %q, want 200", target, resp.Status, body)
		}
	}
}

// TestForwardProxyCAKeyMode: a ca.key that group or others may read is
// loaded with a warning that names it and says how to fix it; a 0600 one
// without.
func TestForwardProxyCAKeyMode(t *testing.T) {
	dir := t.TempDir()
	var warnings []string
	load := func() {
		t.Helper()
		warnings = nil
		cfg := ForwardProxyConfig{CADir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Client: ClientConfig{Warn: func(format string, a ...any) { warnings = append(warnings, fmt.Sprintf(format, a...)) }}}
		if _, err := NewForwardProxy(cfg); err != nil {
			t.Fatal(err)
		}
	}
	load() // made now, 0600
	if len(warnings) != 0 {
		t.Errorf("a new root: warnings %q", warnings)
	}
	key := filepath.Join(dir, "ca.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	load()
	want := fmt.Sprintf("the proxy's root key %q is open to other users (mode 0644): anyone who reads it can pose as any site to the proxy's clients; chmod 600 it", key)
	if len(warnings) != 1 || warnings[0] != want {
		t.Errorf("ca.key 0644: warnings %q, want %q", warnings, want)
	}
	os.Chmod(key, 0o600)
	load()
	if len(warnings) != 0 {
		t.Errorf("ca.key 0600: warnings %q", warnings)
	}
}
