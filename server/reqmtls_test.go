package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	reqmtls "github.com/req-mtls/req-mtls"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// userServer is a plain net/http server of a user's, with request mTLS
// added the documented way: their own certificate in the base config.
func userServer(t *testing.T, p *testpki.PKI, cfg Config, base *tls.Config) string {
	t.Helper()
	cfg.Now = func() time.Time { return testpki.Now }
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	if base == nil {
		base = &tls.Config{Time: testpki.Clock}
	}
	base.Certificates = []tls.Certificate{cert}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := RequestInfo(r)
			name := ""
			if len(info.Chain) > 0 {
				name = info.Chain[0].DNSNames[0]
			}
			fmt.Fprintf(w, "%s flags=%v requested=%t cert=%q validated=%t store=%s resumed=%t", r.Proto, info.Flags, info.CertRequested, name, info.Validated(), info.Store, info.Resumed)
		}),
		TLSConfig:   a.TLSConfig(base),
		ConnContext: ConnContext,
		ErrorLog:    log.New(io.Discard, "", 0),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(a.Listener(ln), "", "")
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String() + "/"
}

func roots(p *testpki.PKI) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	return pool
}

func get(t *testing.T, c *http.Client, u string) (string, error) {
	t.Helper()
	return revDo(c, context.Background(), "GET", u, nil)
}

// TestNetHTTPServerAndTransport: a plain net/http server with an
// Authenticator, fetched with a reqmtls.Transport, flagged and not.
func TestNetHTTPServerAndTransport(t *testing.T) {
	p := testpki.New(t)
	u := userServer(t, p, Config{Policy: PolicyVerify, ClientCAFile: p.RootCA}, nil)
	var mu sync.Mutex
	var handshakes []reqmtls.Handshake
	flagged, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1],
		RootCAs: roots(p), OnHandshake: func(addr string, h reqmtls.Handshake) {
			mu.Lock()
			handshakes = append(handshakes, h)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: flagged}
	for i := range 3 {
		body, err := get(t, c, u)
		if err != nil {
			t.Fatal(err)
		}
		if want := `HTTP/2.0 flags=[80] requested=true cert="client.example" validated=true store=client resumed=false`; body != want {
			t.Fatalf("request %d: %q, want %q", i, body, want)
		}
	}
	if len(handshakes) != 1 || !handshakes[0].CertRequested || !handshakes[0].CertSent || handshakes[0].ALPN != "h2" {
		t.Fatalf("handshakes %+v, want one, asked, certificate sent, h2 (the connection is kept)", handshakes)
	}
	// A new connection resumes the session, which keeps its identity.
	flagged.CloseIdleConnections()
	body, err := get(t, c, u)
	if err != nil || body != `HTTP/2.0 flags=[80] requested=false cert="client.example" validated=true store=client resumed=true` {
		t.Fatalf("resumed: %q, %v", body, err)
	}

	plain, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, RootCAs: roots(p)})
	if err != nil {
		t.Fatal(err)
	}
	body, err = get(t, &http.Client{Transport: plain}, u)
	if err != nil || body != `HTTP/2.0 flags=[] requested=false cert="" validated=false store= resumed=false` {
		t.Fatalf("unflagged: %q, %v", body, err)
	}
}

// TestTransportHTTP1: a server that speaks HTTP/1.1 only; connections are
// kept alive in the HTTP/1.1 pool.
func TestTransportHTTP1(t *testing.T) {
	p := testpki.New(t)
	u := userServer(t, p, Config{ClientCAFile: p.RootCA}, &tls.Config{Time: testpki.Clock, NextProtos: []string{"http/1.1"}})
	n := 0
	tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1],
		RootCAs: roots(p), OnHandshake: func(string, reqmtls.Handshake) { n++ }})
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr}
	for range 3 {
		body, err := get(t, c, u)
		if err != nil || body != `HTTP/1.1 flags=[80] requested=true cert="client.example" validated=true store=client resumed=false` {
			t.Fatalf("%q, %v", body, err)
		}
	}
	if n != 1 {
		t.Errorf("%d handshakes for 3 requests, want 1 (kept alive)", n)
	}
}

// TestTransportErrorsNameTheAlert: a refusal surfaces as an *reqmtls.Error with the
// TLS alert's name.
func TestTransportErrorsNameTheAlert(t *testing.T) {
	p := testpki.New(t)
	u := userServer(t, p, Config{Policy: PolicyRequire, ClientCAFile: p.RootCA}, nil)
	for _, tc := range []struct{ cert, alert string }{
		{"", "certificate_required"},
		{"other-ca", "bad_certificate"},
	} {
		cfg := reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, RootCAs: roots(p)}
		if tc.cert != "" {
			cfg.CertFile, cfg.KeyFile = p.Clients[tc.cert][0], p.Clients[tc.cert][1]
		}
		tr, err := reqmtls.NewTransport(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = get(t, &http.Client{Transport: tr}, u)
		var e *reqmtls.Error
		if !errors.As(err, &e) || e.Alert != tc.alert {
			t.Errorf("cert %q: %v (%#v), want an *Error with alert %s", tc.cert, err, e, tc.alert)
		}
	}
}

// TestComposesWithBase: the base config's GetConfigForClient, curves and
// VerifyConnection are kept around the decision.
func TestComposesWithBase(t *testing.T) {
	p := testpki.New(t)
	var verified, custom int
	var mu sync.Mutex
	base := &tls.Config{Time: testpki.Clock,
		CurvePreferences: []tls.CurveID{tls.CurveP256},
		VerifyConnection: func(cs tls.ConnectionState) error {
			mu.Lock()
			verified++
			mu.Unlock()
			return nil
		},
	}
	cert, _ := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	base.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		custom++
		mu.Unlock()
		return &tls.Config{Time: testpki.Clock, Certificates: []tls.Certificate{cert}, CurvePreferences: []tls.CurveID{tls.CurveP256}, VerifyConnection: base.VerifyConnection}, nil
	}
	u := userServer(t, p, Config{Policy: PolicyRequire, ClientCAFile: p.RootCA}, base)
	d, err := reqmtls.NewDialer(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1], RootCAs: roots(p)})
	if err != nil {
		t.Fatal(err)
	}
	pu, _ := http.NewRequest("GET", u, nil)
	cc, err := d.Dial(context.Background(), pu.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := cc.RoundTrip(pu)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "requested=true") || !strings.Contains(string(body), "validated=true") {
		t.Fatalf("body %q", body)
	}
	mu.Lock()
	defer mu.Unlock()
	if custom != 1 || verified != 1 {
		t.Errorf("base GetConfigForClient called %d times, VerifyConnection %d times; want 1 and 1", custom, verified)
	}
	if h := cc.Handshake(); !h.CertRequested || h.Version != "TLS 1.3" {
		t.Errorf("handshake %+v", h)
	}
}

// TestConstantsMatch: the public constants are the internal ones.
func TestConstantsMatch(t *testing.T) {
	if reqmtls.FlagRequestMTLS != tlsflags.RequestMTLS || reqmtls.CodepointExperimental != tlsflags.CodepointExperimental || reqmtls.CodepointBoringSSL != tlsflags.CodepointBoringSSL {
		t.Error("flag or codepoint constants differ from internal/tlsflags")
	}
	for _, p := range []Policy{PolicyRequest, PolicyVerify, PolicyRequire, PolicyAlways} {
		q, err := auth.ParsePolicy(p.String())
		if err != nil || Policy(q) != p {
			t.Errorf("policy %d (%s) is %d internally", p, p, q)
		}
	}
}
