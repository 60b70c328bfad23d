package server

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/httpsig"
	"github.com/req-mtls/req-mtls/internal/testutil"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// tlsServe serves h over TLS on a loopback listener with a config from
// a.TLSConfig(base), the documented way, and returns its address.
func tlsServe(t *testing.T, p *testpki.PKI, a *Authenticator, base *tls.Config, h http.Handler) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	base.Certificates = []tls.Certificate{cert}
	base.Time = testpki.Clock
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnContext: ConnContext}
	go srv.Serve(tls.NewListener(a.Listener(ln), a.TLSConfig(base)))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func newAuth(t *testing.T, cfg Config) *Authenticator {
	t.Helper()
	cfg.Now = testpki.Clock
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// stockGet makes one request with crypto/tls as the client, offering protos,
// with the client certificate pair (nil for none), and returns the body.
func stockGet(p *testpki.PKI, addr string, protos []string, pair []string, maxVersion uint16) (string, error) {
	cfg := &tls.Config{RootCAs: roots(p), ServerName: "localhost", NextProtos: protos, Time: testpki.Clock, MaxVersion: maxVersion}
	if pair != nil {
		cert, err := tls.LoadX509KeyPair(pair[0], pair[1])
		if err != nil {
			return "", err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestACMEProtocolDoesNotBypassPolicy: a client offering acme-tls/1 alone,
// to a config that does not serve ACME, is under the policy like any other:
// a raw TLS listener over the documented stack never gives it data without
// a certificate.
func TestACMEProtocolDoesNotBypassPolicy(t *testing.T) {
	p := testpki.New(t)
	a := newAuth(t, Config{Policy: PolicyAlways, ClientCAFile: p.RootCA})
	cert, _ := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tl := tls.NewListener(a.Listener(ln), a.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, Time: testpki.Clock}))
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if c.(*tls.Conn).Handshake() == nil {
					io.WriteString(c, "data for anyone")
				}
			}()
		}
	}()
	for _, protos := range [][]string{{"acme-tls/1"}, nil} {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots(p), ServerName: "localhost", NextProtos: protos, Time: testpki.Clock})
		if err != nil {
			continue // refused in the handshake: right
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		c.Close()
		if len(b) > 0 {
			t.Errorf("ALPN %q, no certificate, PolicyAlways: read %q", protos, b)
		}
	}
}

// TestBaseClientAuthRefused: a base config that asks for and verifies
// client certificates is never served without them.
func TestBaseClientAuthRefused(t *testing.T) {
	p := testpki.New(t)
	a := newAuth(t, Config{ClientCAFile: p.RootCA})
	for _, base := range []*tls.Config{
		{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots(p)},
		{ClientAuth: tls.RequireAnyClientCert},
		{ClientCAs: roots(p)},
	} {
		addr := tlsServe(t, p, a, base, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "served")
		}))
		body, err := stockGet(p, addr, nil, nil, 0)
		if err == nil || strings.Contains(body, "served") {
			t.Errorf("base ClientAuth %v, ClientCAs %v: a client without a certificate got %q, %v", base.ClientAuth, base.ClientCAs != nil, body, err)
		}
	}
}

// TestFlaggedOverTLS12NotAsked: a base capped at TLS 1.2 never asks a
// flagged client for its certificate, which would travel in the clear.
func TestFlaggedOverTLS12NotAsked(t *testing.T) {
	p := testpki.New(t)
	a := newAuth(t, Config{ClientCAFile: p.RootCA})
	addr := tlsServe(t, p, a, &tls.Config{MaxVersion: tls.VersionTLS12}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := RequestInfo(r)
		fmt.Fprintf(w, "requested=%t chain=%d", i.CertRequested, len(i.Chain))
	}))
	d, err := reqmtls.NewDialer(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1], RootCAs: roots(p), ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := d.Dial(t.Context(), &url.URL{Scheme: "https", Host: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if h := cc.Handshake(); h.Version != "TLS 1.2" || h.CertRequested || h.CertSent {
		t.Fatalf("capped at TLS 1.2: version %s, certificate requested %t, sent %t", h.Version, h.CertRequested, h.CertSent)
	}
}

// TestClientCertChainIsVerifiedPath: the origin is told the chain that
// validated the leaf, not whatever else the client put in its Certificate
// message.
func TestClientCertChainIsVerifiedPath(t *testing.T) {
	p := testpki.New(t)
	// The valid leaf, followed by an unrelated self-signed certificate.
	leafPEM, _ := os.ReadFile(p.Clients["valid"][0])
	junkPEM, _ := os.ReadFile(p.Clients["self-signed"][0])
	chainFile := filepath.Join(p.Dir, "leaf-and-junk.crt")
	if err := os.WriteFile(chainFile, append(leafPEM, junkPEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	got := make(chan http.Header, 1)
	addr := gatewayServer(t, p, GatewayConfig{XFCC: true}, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() })
	tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, CertFile: chainFile, KeyFile: p.Clients["valid"][1], RootCAs: roots(p)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h := <-got
	if h.Get("Req-Mtls-Cert-Status") != "valid" || h.Get("Client-Cert") == "" {
		t.Fatalf("status %q, Client-Cert %q", h.Get("Req-Mtls-Cert-Status"), h.Get("Client-Cert"))
	}
	if c := h.Get("Client-Cert-Chain"); c != "" {
		t.Errorf("Client-Cert-Chain %q: the leaf is issued by the root itself, so the verified path has no intermediate", c)
	}
	// XFCC's Chain is the verified path too: the leaf alone here.
	if x := h.Get("X-Forwarded-Client-Cert"); strings.Count(x, "BEGIN%20CERTIFICATE") != 2 {
		t.Errorf("XFCC holds %d certificates, want the leaf in Cert and in Chain: %s", strings.Count(x, "BEGIN%20CERTIFICATE"), x)
	}
}

// slowListener delays each connection's first read, so that handshakes
// take delay.
type slowListener struct {
	net.Listener
	delay time.Duration
}

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &slowConn{Conn: c, delay: l.delay}, nil
}

type slowConn struct {
	net.Conn
	delay time.Duration
	once  sync.Once
}

func (c *slowConn) Read(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.Conn.Read(p)
}

// TestSharedDialOutlivesFirstCaller: the first request's deadline ends the
// first request alone, not the dial that a second request shares; the
// error names the request's own deadline.
func TestSharedDialOutlivesFirstCaller(t *testing.T) {
	p := testpki.New(t)
	a := newAuth(t, Config{ClientCAFile: p.RootCA})
	cert, _ := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), ConnContext: ConnContext}
	go srv.Serve(tls.NewListener(a.Listener(slowListener{ln, 400 * time.Millisecond}), a.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, Time: testpki.Clock})))
	defer srv.Close()
	tr := revTransport(t, p)
	c := &http.Client{Transport: tr}
	u := "https://" + ln.Addr().String() + "/"
	first := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := revDo(c, ctx, "GET", u, nil)
		first <- err
	}()
	time.Sleep(20 * time.Millisecond) // the second joins the dial in progress
	body, err := revDo(c, context.Background(), "GET", u, nil)
	if err != nil || body != "ok" {
		t.Errorf("second request, sharing the dial: %q, %v", body, err)
	}
	if err := <-first; err == nil || !strings.Contains(err.Error(), "the request's own deadline passed") {
		t.Errorf("first request: %v, want its own deadline named", err)
	}
}

// gatewayServer runs a Server whose handler is a gateway (cfg, with its
// Upstream set here) to an HTTP/1.1 origin served by origin, and returns
// the server's address.
func gatewayServer(t *testing.T, p *testpki.PKI, cfg GatewayConfig, origin http.HandlerFunc) string {
	t.Helper()
	return gatewayServerWith(t, p, Config{}, cfg, origin)
}

// gatewayServerWith is gatewayServer with more of the server's Config.
func gatewayServerWith(t *testing.T, p *testpki.PKI, sc Config, cfg GatewayConfig, origin http.HandlerFunc) string {
	t.Helper()
	o := httptest.NewServer(origin)
	t.Cleanup(o.Close)
	cfg.Upstream = o.URL
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	gw, err := NewGateway(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc.CertFile, sc.KeyFile, sc.ClientCAFile, sc.Handler = p.ServerCert, p.ServerKey, p.RootCA, gw
	sc.Now, sc.Logger = testpki.Clock, slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := New(sc)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return ln.Addr().String()
}

// rawHTTP1 sends request over a TLS connection speaking HTTP/1.1 to addr,
// then what after says, and returns everything read until the server
// closes or 3 s pass.
func rawHTTP1(t *testing.T, p *testpki.PKI, addr, request, after string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots(p), ServerName: "localhost", NextProtos: []string{"http/1.1"}, Time: testpki.Clock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, request)
	if after != "" {
		time.Sleep(100 * time.Millisecond)
		io.WriteString(c, after)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestMaxResponseBodyExact: a response of exactly the limit passes whole,
// chunked or delimited by the close; one byte more is cut.
func TestMaxResponseBodyExact(t *testing.T) {
	p := testpki.New(t)
	const limit = 1000
	addr := gatewayServer(t, p, GatewayConfig{MaxResponseBody: limit}, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		body := strings.Repeat("x", n)
		if r.URL.Path == "/close" {
			// No length, no chunking: the body ends with the connection.
			c, bw, _ := w.(http.Hijacker).Hijack()
			bw.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
			bw.Flush()
			c.Close()
			return
		}
		io.WriteString(w, body[:n/2])
		w.(http.Flusher).Flush() // chunked from here
		io.WriteString(w, body[n/2:])
	})
	tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, RootCAs: roots(p)})
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr}
	for _, path := range []string{"/chunked", "/close"} {
		for _, n := range []int{limit - 1, limit, limit + 1} {
			body, err := revDo(c, context.Background(), "GET", fmt.Sprintf("https://%s%s?n=%d", addr, path, n), nil)
			whole := err == nil && len(body) == n
			if whole != (n <= limit) {
				t.Errorf("%s, %d bytes, limit %d: read %d bytes, %v", path, n, limit, len(body), err)
			}
		}
	}
}

// TestWebSocketWithMaxResponseBody: a response limit leaves WebSocket
// upgrades alone.
func TestWebSocketWithMaxResponseBody(t *testing.T) {
	p := testpki.New(t)
	addr := gatewayServer(t, p, GatewayConfig{MaxResponseBody: 1 << 20}, func(w http.ResponseWriter, r *http.Request) {
		c, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		bw.Flush()
		line := make([]byte, 4)
		if _, err := io.ReadFull(bw, line); err == nil {
			c.Write(append([]byte("echo:"), line...))
		}
	})
	out := rawHTTP1(t, p, addr, "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", "ping")
	if !strings.HasPrefix(out, "HTTP/1.1 101 ") || !strings.HasSuffix(out, "echo:ping") {
		t.Errorf("WebSocket through a gateway with -max-response-body:\n%s", out)
	}
}

// TestUpgradeOnlyWebSocket: any other Upgrade token (h2c) never reaches the
// origin; the request does, as a plain one.
func TestUpgradeOnlyWebSocket(t *testing.T) {
	p := testpki.New(t)
	got := make(chan string, 1)
	addr := gatewayServer(t, p, GatewayConfig{}, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Upgrade") + "|" + r.Header.Get("Http2-Settings")
		io.WriteString(w, "plain")
	})
	out := rawHTTP1(t, p, addr, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n", "")
	if g := <-got; g != "|" {
		t.Errorf("origin received Upgrade and HTTP2-Settings %q", g)
	}
	if !strings.HasPrefix(out, "HTTP/1.1 200 ") || !strings.HasSuffix(out, "plain") {
		t.Errorf("answer:\n%s", out)
	}
}

// TestListenerHandshakeDeadline: Authenticator.Listener closes a connection
// whose handshake does not come, by default and as configured.
func TestListenerHandshakeDeadline(t *testing.T) {
	p := testpki.New(t)
	a := newAuth(t, Config{ClientCAFile: p.RootCA, HandshakeTimeout: 300 * time.Millisecond})
	addr := tlsServe(t, p, a, &tls.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{22, 3, 1, 0x01}) // half a record header, then nothing
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if took := time.Since(start); n != 0 || err != io.EOF || took > 3*time.Second {
		t.Errorf("a silent client: read %d bytes, %v after %v; want the server to close it after 300 ms", n, err, took)
	}
	// A client that completes its handshake in time is not closed later.
	tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots(p), ServerName: "localhost", Time: testpki.Clock})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	time.Sleep(600 * time.Millisecond)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	if b, err := io.ReadAll(tc); !strings.HasPrefix(string(b), "HTTP/1.1 200") {
		t.Errorf("a prompt client, 600 ms after its handshake: %q, %v", b, err)
	}
}

// TestUnwrappedListenerWarns: a TLS config whose connections did not come
// through the Authenticator's listener says so in the log, once.
func TestUnwrappedListenerWarns(t *testing.T) {
	p := testpki.New(t)
	var logs testutil.Buffer
	a, err := NewAuthenticator(Config{ClientCAFile: p.RootCA, Now: testpki.Clock, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(tls.NewListener(ln, a.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, Time: testpki.Clock})))
	defer srv.Close()
	for range 3 {
		stockGet(p, ln.Addr().String(), nil, nil, 0)
	}
	if n := strings.Count(logs.String(), "without the Authenticator's listener"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
}

// TestAuthenticatorCollector: a user's own server gets the Authenticator's
// metrics through a collector registered in the user's registry.
func TestAuthenticatorCollector(t *testing.T) {
	p := testpki.New(t)
	a := newAuth(t, Config{ClientCAFile: p.RootCA})
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.Collector())
	addr := tlsServe(t, p, a, &tls.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags,
		CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1], RootCAs: roots(p)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/"); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		expfmt.MetricFamilyToText(&out, mf)
	}
	for _, want := range []string{
		`reqmtls_decisions_total{cert="valid",cert_requested="true",flagged="true",resumed="false"} 1`,
		`reqmtls_certificate_not_after_seconds{role="client_root",subject="CN=test client root"}`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, out.String())
		}
	}
}

// TestGatewayWebBotAuth: the gateway verifies Web Bot Auth signatures
// against the agents file and tells the origin, with whether the
// certificate and the signature name the same bot; spoofed copies of the
// fields never reach the origin.
func TestGatewayWebBotAuth(t *testing.T) {
	p := testpki.New(t)
	_, key, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	x := base64.RawURLEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	jwks := filepath.Join(dir, "bot.jwks")
	os.WriteFile(jwks, []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"`+x+`"}]}`), 0o600)
	agents := filepath.Join(dir, "agents")
	os.WriteFile(agents, []byte("# agents this site trusts\nhttps://client.example "+jwks+"\nhttps://bot.example "+jwks+"\n"), 0o600)
	got := make(chan http.Header, 1)
	addr := gatewayServerWith(t, p, Config{SignatureAgentsFile: agents}, GatewayConfig{}, func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() })
	for _, tc := range []struct {
		name  string
		cfg   reqmtls.ClientConfig
		spoof bool
		want  map[string]string
	}{
		{"Unsigned", reqmtls.ClientConfig{}, true, map[string]string{"Web-Bot-Auth-Status": "none", "Web-Bot-Auth-Agent": "", "Bot-Identity-Match": ""}},
		{"SignedAndCertificateAgree", reqmtls.ClientConfig{Flags: reqmtls.RequestMTLSFlags, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1],
			SignatureKey: key, SignatureAgent: "https://client.example"}, false,
			map[string]string{"Web-Bot-Auth-Status": "valid", "Web-Bot-Auth-Agent": `"https://client.example"`,
				"Web-Bot-Auth-Keyid": strconv.Quote(httpsig.Thumbprint(key.Public().(ed25519.PublicKey))), "Bot-Identity-Match": "?1"}},
		{"SignedAndCertificateDisagree", reqmtls.ClientConfig{Flags: reqmtls.RequestMTLSFlags, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1],
			SignatureKey: key, SignatureAgent: "https://bot.example"}, false,
			map[string]string{"Web-Bot-Auth-Status": "valid", "Web-Bot-Auth-Agent": `"https://bot.example"`, "Bot-Identity-Match": "?0"}},
		{"SignedOnly", reqmtls.ClientConfig{SignatureKey: key, SignatureAgent: "https://bot.example", SignatureAgentDictionary: true}, false,
			map[string]string{"Web-Bot-Auth-Status": "valid", "Web-Bot-Auth-Agent": `"https://bot.example"`, "Bot-Identity-Match": ""}},
		{"UntrustedAgent", reqmtls.ClientConfig{SignatureKey: key, SignatureAgent: "https://stranger.example"}, false,
			map[string]string{"Web-Bot-Auth-Status": `invalid;reason="agent not trusted: https://stranger.example"`, "Web-Bot-Auth-Agent": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Time, tc.cfg.RootCAs = testpki.Clock, roots(p)
			tr, err := reqmtls.NewTransport(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
			if tc.spoof {
				req.Header.Set("Web-Bot-Auth-Status", "valid")
				req.Header.Set("Web_Bot_Auth_Agent", `"https://client.example"`)
				req.Header.Set("Bot-Identity-Match", "?1")
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			h := <-got
			for k, v := range tc.want {
				if h.Get(k) != v {
					t.Errorf("%s: %q, want %q", k, h.Get(k), v)
				}
			}
			if tc.spoof && h.Get("Web_Bot_Auth_Agent") != "" {
				t.Error("a spoofed Web_Bot_Auth_Agent reached the origin")
			}
		})
	}
}

// botAgents writes an agents file trusting https://client.example with
// key's public key pinned, and returns it.
func botAgents(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	dir := t.TempDir()
	x := base64.RawURLEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	jwks := filepath.Join(dir, "bot.jwks")
	os.WriteFile(jwks, []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"`+x+`"}]}`), 0o600)
	agents := filepath.Join(dir, "agents")
	os.WriteFile(agents, []byte("https://client.example "+jwks+"\n"), 0o600)
	return agents
}

// TestWebBotAuthDebugAndMetrics: the verdict made once per request is in
// /debug?format=json, with whether the certificate names the same bot,
// and counted in the metrics; the reference's text lines stay as they are.
func TestWebBotAuthDebugAndMetrics(t *testing.T) {
	p := testpki.New(t)
	_, key, _ := ed25519.GenerateKey(nil)
	srv, err := New(Config{CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientCAFile: p.RootCA, SignatureAgentsFile: botAgents(t, key),
		Now: testpki.Clock, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	tr, _ := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, RootCAs: roots(p), Flags: reqmtls.RequestMTLSFlags,
		CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1], SignatureKey: key, SignatureAgent: "https://client.example"})
	c := &http.Client{Transport: tr}
	body, err := revDo(c, context.Background(), "GET", "https://"+ln.Addr().String()+"/debug?format=json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		WebBotAuth struct {
			Status  string `json:"status"`
			Agent   string `json:"agent"`
			SameBot *bool  `json:"same_bot_as_certificate"`
		} `json:"web_bot_auth"`
	}
	json.Unmarshal([]byte(body), &rep)
	if w := rep.WebBotAuth; w.Status != "valid" || w.Agent != "https://client.example" || w.SameBot == nil || !*w.SameBot {
		t.Errorf("/debug?format=json: %s", body)
	}
	text, _ := revDo(c, context.Background(), "GET", "https://"+ln.Addr().String()+"/debug", nil)
	if strings.Contains(text, "bot") || strings.Count(text, "\n") != 6 {
		t.Errorf("/debug text changed:\n%s", text)
	}
	rec := httptest.NewRecorder()
	srv.AdminHandler(false).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `reqmtls_web_bot_auth_requests_total{status="valid"} 2`) ||
		!strings.Contains(rec.Body.String(), `reqmtls_web_bot_auth_agent_keys{agent="https://client.example"} 1`) {
		t.Errorf("metrics lack the two valid requests:\n%s", rec.Body.String())
	}
}

// TestSignatureVerifierMiddleware: library users of an Authenticator get
// the verdict from the middleware.
func TestSignatureVerifierMiddleware(t *testing.T) {
	p := testpki.New(t)
	_, key, _ := ed25519.GenerateKey(nil)
	// As NewSignatureVerifier, on the tests' clock (the client signs by it).
	v, err := newSignatureVerifier(botAgents(t, key), "", webbotauth.Config{Now: testpki.Clock}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a := newAuth(t, Config{ClientCAFile: p.RootCA})
	addr := tlsServe(t, p, a, &tls.Config{}, v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, ok := SignatureResultOf(r)
		fmt.Fprintf(w, "%t %s %s", ok, res.Status, res.Agent)
	})))
	tr, _ := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, RootCAs: roots(p), SignatureKey: key, SignatureAgent: "https://client.example"})
	body, err := revDo(&http.Client{Transport: tr}, context.Background(), "GET", "https://"+addr+"/", nil)
	if err != nil || body != "true valid https://client.example" {
		t.Errorf("%q, %v", body, err)
	}
}

// TestGatewayStreams: event streams and bodies of unknown length reach the
// client as the origin flushes them, not when it is done.
func TestGatewayStreams(t *testing.T) {
	p := testpki.New(t)
	release := make(chan struct{})
	defer close(release)
	addr := gatewayServer(t, p, GatewayConfig{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events" {
			w.Header().Set("Content-Type", "text/event-stream")
		}
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		io.WriteString(w, "second\n")
	})
	tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, RootCAs: roots(p)})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/events", "/chunked"} {
		resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			got <- line
		}()
		select {
		case line := <-got:
			if line != "first\n" {
				t.Errorf("%s: first line %q", path, line)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("%s: the first line did not come while the origin held the rest", path)
		}
		resp.Body.Close()
	}
}
