package server

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/httpsig"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/testutil"
)

// The tests here come from a review of the Transport: each failed before
// the fix it names.

type revServer struct {
	url   string
	mu    sync.Mutex
	calls map[string]int
	addrs map[string]bool
}

func (s *revServer) count(id string) int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls[id] }

// revStart runs a user's net/http server with an Authenticator; /slow?ms=N&id=X sleeps.
func revStart(t *testing.T, p *testpki.PKI, cfg Config, base *tls.Config, h2 *http.HTTP2Config) *revServer {
	t.Helper()
	cfg.Now = func() time.Time { return testpki.Now }
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if base == nil {
		base = &tls.Config{Time: testpki.Clock}
	}
	base.Certificates = []tls.Certificate{cert}
	s := &revServer{calls: map[string]int{}, addrs: map[string]bool{}}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.URL.Query().Get("id")
			s.mu.Lock()
			s.calls[id]++
			s.addrs[r.RemoteAddr] = true
			s.mu.Unlock()
			io.Copy(io.Discard, r.Body)
			ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-r.Context().Done():
			}
			fmt.Fprintf(w, "%s ok", r.Proto)
		}),
		TLSConfig:   a.TLSConfig(base),
		ConnContext: ConnContext,
		ErrorLog:    log.New(io.Discard, "", 0),
		HTTP2:       h2,
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.ServeTLS(a.Listener(ln), "", "")
	t.Cleanup(func() { srv.Close() })
	s.url = "https://" + ln.Addr().String()
	return s
}

func revTransport(t *testing.T, p *testpki.PKI) *reqmtls.Transport {
	tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1], RootCAs: roots(p)})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func revDo(c *http.Client, ctx context.Context, method, u string, body io.Reader) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, method, u, body)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// One request that times out on a shared HTTP/2 connection: does another
// request on the same connection survive, and is it sent once?
func TestH2TimeoutLeavesConnection(t *testing.T) {
	p := testpki.New(t)
	s := revStart(t, p, Config{ClientCAFile: p.RootCA}, nil, nil)
	for _, method := range []string{"GET", "POST"} {
		tr := revTransport(t, p)
		c := &http.Client{Transport: tr}
		if _, err := revDo(c, context.Background(), "GET", s.url+"/slow?id=warm"+method, nil); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		var aErr error
		var aDur time.Duration
		go func() {
			defer wg.Done()
			start := time.Now()
			var body io.Reader
			if method == "POST" {
				body = strings.NewReader("payload")
			}
			_, aErr = revDo(c, context.Background(), method, s.url+"/slow?ms=2500&id=A"+method, body)
			aDur = time.Since(start)
		}()
		time.Sleep(100 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		_, bErr := revDo(c, ctx, "GET", s.url+"/slow?ms=3000&id=B"+method, nil)
		cancel()
		bDur := time.Since(start)
		wg.Wait()
		t.Logf("%s: B (timeout 300ms) returned after %v: %v", method, bDur.Round(time.Millisecond), bErr)
		t.Logf("%s: A returned after %v, err=%v, handler ran %d time(s)", method, aDur.Round(time.Millisecond), aErr, s.count("A"+method))
		if aErr != nil || s.count("A"+method) != 1 {
			t.Errorf("%s: request A on the same HTTP/2 connection was broken by B's timeout", method)
		}
	}
}

// TestNoCertificateSaysWhere: ServeTLS's certificate files never reach
// the configs TLSConfig builds; the handshake fails with an error that says
// where the certificate must come from.
func TestNoCertificateSaysWhere(t *testing.T) {
	p := testpki.New(t)
	a, err := NewAuthenticator(Config{ClientCAFile: p.RootCA})
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.Buffer
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		TLSConfig: a.TLSConfig(nil), ErrorLog: log.New(&logs, "", 0)}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.ServeTLS(a.Listener(ln), p.ServerCert, p.ServerKey)
	defer srv.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{Time: testpki.Clock, RootCAs: roots(p)}}
	if _, err := revDo(&http.Client{Transport: tr}, context.Background(), "GET", "https://"+ln.Addr().String()+"/", nil); err == nil {
		t.Fatal("handshake succeeded without a certificate in the config")
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !strings.Contains(logs.String(), "no server certificate"); {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "reqmtls: no server certificate: put it in the base config given to TLSConfig") {
		t.Errorf("server log: %q", logs.String())
	}
}

// TestAlertNamedOverHTTP1: a refused certificate is an *reqmtls.Error naming the
// alert whether the server speaks HTTP/2 or HTTP/1.1 only.
func TestAlertNamedOverHTTP1(t *testing.T) {
	p := testpki.New(t)
	for _, protos := range [][]string{{"h2", "http/1.1"}, {"http/1.1"}} {
		s := revStart(t, p, Config{Policy: PolicyRequire, ClientCAFile: p.RootCA}, &tls.Config{Time: testpki.Clock, NextProtos: protos}, nil)
		tr, _ := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, CertFile: p.Clients["other-ca"][0], KeyFile: p.Clients["other-ca"][1], RootCAs: roots(p)})
		_, err := revDo(&http.Client{Transport: tr}, context.Background(), "GET", s.url+"/", nil)
		var e *reqmtls.Error
		if !errors.As(err, &e) || e.Alert != "bad_certificate" {
			t.Errorf("server ALPN %v, refused certificate: %v, want an *Error with alert bad_certificate", protos, err)
		}
	}
}

// TestClientConnIdleTimeout: a reqmtls.Dialer's HTTP/2 connection stays usable
// while idle for less than reqmtls.ClientConfig.IdleTimeout.
func TestClientConnIdleTimeout(t *testing.T) {
	p := testpki.New(t)
	s := revStart(t, p, Config{ClientCAFile: p.RootCA}, nil, nil)
	d, _ := reqmtls.NewDialer(reqmtls.ClientConfig{Time: testpki.Clock, RootCAs: roots(p), IdleTimeout: 10 * time.Second})
	req, _ := http.NewRequest("GET", s.url+"/", nil)
	cc, err := d.Dial(context.Background(), req.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for i, wait := range []time.Duration{0, 1500 * time.Millisecond} {
		time.Sleep(wait)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d after %v idle (ALPN %s): %v", i, wait, cc.Handshake().ALPN, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// signerOnly hides everything of a key but crypto.Signer, as a KMS or an
// HSM client does.
type signerOnly struct{ s crypto.Signer }

func (k signerOnly) Public() crypto.PublicKey { return k.s.Public() }
func (k signerOnly) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.s.Sign(r, digest, opts)
}

// TestGetClientCertificateSigner: a certificate whose key is only a
// crypto.Signer, given by GetClientCertificate, is sent and validates.
func TestGetClientCertificateSigner(t *testing.T) {
	p := testpki.New(t)
	s := revStart(t, p, Config{Policy: PolicyRequire, ClientCAFile: p.RootCA}, nil, nil)
	pair, err := tls.LoadX509KeyPair(p.Clients["valid"][0], p.Clients["valid"][1])
	if err != nil {
		t.Fatal(err)
	}
	var asked int
	tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, RootCAs: roots(p),
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked++
			if len(cri.AcceptableCAs) == 0 || len(cri.SignatureSchemes) == 0 {
				t.Errorf("request info without CAs or schemes: %+v", cri)
			}
			return &tls.Certificate{Certificate: pair.Certificate, PrivateKey: signerOnly{pair.PrivateKey.(crypto.Signer)}}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if body, err := revDo(&http.Client{Transport: tr}, context.Background(), "GET", s.url+"/", nil); err != nil || !strings.HasSuffix(body, "ok") {
		t.Fatalf("with a Signer-only key under require: %q, %v", body, err)
	}
	if asked != 1 {
		t.Errorf("GetClientCertificate called %d times, want 1", asked)
	}
	if _, err := reqmtls.NewTransport(reqmtls.ClientConfig{CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1],
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return nil, nil }}); err == nil {
		t.Error("files and GetClientCertificate together: no error")
	}
}

// TestTransportThroughProxy: a reqmtls.Transport tunnels through an HTTP proxy
// (CONNECT) and the handshake inside carries the flag and certificate;
// requests share the tunnel's connection.
func TestTransportThroughProxy(t *testing.T) {
	p := testpki.New(t)
	a := newAuth(t, Config{ClientCAFile: p.RootCA})
	addr := tlsServe(t, p, a, &tls.Config{}, a.DebugHandler())
	cp, proxyURL := testutil.StartConnectProxy(t, nil)
	var hs []reqmtls.Handshake
	tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1],
		RootCAs: roots(p), Proxy: http.ProxyURL(proxyURL), OnHandshake: func(_ string, h reqmtls.Handshake) { hs = append(hs, h) }})
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr}
	for range 2 {
		body, err := revDo(c, context.Background(), "GET", "https://"+addr+"/debug", nil)
		if err != nil || !strings.HasSuffix(body, "Cert validated: true\n") {
			t.Fatalf("through the proxy: %v\n%s", err, body)
		}
	}
	if tun := cp.Tunnels(); len(tun) != 1 || tun[0] != addr || len(hs) != 1 || hs[0].Proxy != proxyURL.String() {
		t.Errorf("tunnels %q, handshakes %+v", tun, hs)
	}
}

// TestErrorsNameConfigFields: the library's errors speak of its config
// fields (the CLI turns them into its flags), and still give the alert.
func TestErrorsNameConfigFields(t *testing.T) {
	p := testpki.New(t)
	s := revStart(t, p, Config{Policy: PolicyRequire, ClientCAFile: p.RootCA}, nil, nil)
	for _, tc := range []struct {
		cfg        reqmtls.ClientConfig
		alert, msg string
	}{
		{reqmtls.ClientConfig{Flags: reqmtls.RequestMTLSFlags, RootCAs: roots(p)}, "certificate_required", "give one in CertFile and KeyFile (or GetClientCertificate)"},
		{reqmtls.ClientConfig{RootCAs: x509.NewCertPool()}, "", "put the server's root in RootCAs"},
	} {
		tc.cfg.Time = testpki.Clock
		tr, err := reqmtls.NewTransport(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = revDo(&http.Client{Transport: tr}, context.Background(), "GET", s.url+"/", nil)
		var e *reqmtls.Error
		if !errors.As(err, &e) || e.Alert != tc.alert || !strings.Contains(e.Hint, tc.msg) {
			t.Errorf("error %v: alert %q, hint %q; want %q and %q", err, e.Alert, e.Hint, tc.alert, tc.msg)
		}
		for _, flag := range []string{"-cert", "-key", "-server-cacert", "-timeout"} {
			if strings.Contains(e.Msg+e.Hint, flag) {
				t.Errorf("a library error speaks of the flag %s: %s / %s", flag, e.Msg, e.Hint)
			}
		}
	}
}

// TestMaxConnsPerHost: with MaxConnsPerHost 1, concurrent requests to a
// host share one connection, HTTP/2 (whose server allows one stream at a
// time) and HTTP/1.1 alike. Over HTTP/2 the requests after the first wait
// for the server's SETTINGS: a stream opened before them, over the
// server's limit, could be reset with PROTOCOL_ERROR, after which HTTP/2
// takes no new request on the connection.
func TestMaxConnsPerHost(t *testing.T) {
	p := testpki.New(t)
	for _, tc := range []struct {
		name   string
		protos []string
		h2     *http.HTTP2Config
	}{
		{"h2", nil, &http.HTTP2Config{MaxConcurrentStreams: 1}},
		{"http1", []string{"http/1.1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := revStart(t, p, Config{ClientCAFile: p.RootCA}, &tls.Config{NextProtos: tc.protos}, tc.h2)
			tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, RootCAs: roots(p), MaxConnsPerHost: 1})
			if err != nil {
				t.Fatal(err)
			}
			c := &http.Client{Transport: tr}
			var wg sync.WaitGroup
			for i := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := revDo(c, context.Background(), "GET", fmt.Sprintf("%s/slow?ms=30&id=M%d", s.url, i), nil); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			s.mu.Lock()
			defer s.mu.Unlock()
			if len(s.addrs) != 1 {
				t.Errorf("6 concurrent requests with MaxConnsPerHost 1: %d connections", len(s.addrs))
			}
		})
	}
}

// TestHTTP1PoolsByProxy: over HTTP/1.1, a connection made through a proxy
// never serves a request meant to go direct (net/http pools by address).
func TestHTTP1PoolsByProxy(t *testing.T) {
	p := testpki.New(t)
	s := revStart(t, p, Config{ClientCAFile: p.RootCA}, &tls.Config{NextProtos: []string{"http/1.1"}}, nil)
	cp, proxyURL := testutil.StartConnectProxy(t, nil)
	var viaProxy atomic.Bool
	viaProxy.Store(true)
	tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, RootCAs: roots(p), Proxy: func(*http.Request) (*url.URL, error) {
		if viaProxy.Load() {
			return proxyURL, nil
		}
		return nil, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr}
	for i, proxied := range []bool{true, true, false} {
		viaProxy.Store(proxied)
		if _, err := revDo(c, context.Background(), "GET", fmt.Sprintf("%s/?id=P%d", s.url, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(cp.Tunnels()) != 1 || len(s.addrs) != 2 {
		t.Errorf("%d tunnels, %d connections at the server: want 1 tunnel (reused once) and a direct connection of its own", len(cp.Tunnels()), len(s.addrs))
	}
}

// TestSignedRequests: with a SignatureKey, every request carries a Web Bot
// Auth signature that verifies with the key, covering @authority and
// Signature-Agent (as an sf-string, or the dictionary member), with the
// key's thumbprint as keyid and the web-bot-auth tag.
func TestSignedRequests(t *testing.T) {
	p := testpki.New(t)
	_, key, _ := ed25519.GenerateKey(nil)
	pub := key.Public().(ed25519.PublicKey)
	for _, dict := range []bool{false, true} {
		t.Run(fmt.Sprintf("dictionary=%t", dict), func(t *testing.T) {
			a := newAuth(t, Config{ClientCAFile: p.RootCA})
			got := make(chan string, 1)
			addr := tlsServe(t, p, a, &tls.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sigs, err := httpsig.Parse(r.Header)
				s := sigs["sig1"]
				switch {
				case err != nil:
				case s == nil:
					err = errors.New("no sig1")
				default:
					err = httpsig.Verify(r, s, pub)
				}
				agentKey := ""
				if dict {
					agentKey = "sig1"
				}
				if err == nil && (!s.Covers("@authority", "") || !s.Covers("signature-agent", agentKey) || s.Params.Tag != "web-bot-auth" ||
					s.Params.KeyID != httpsig.Thumbprint(pub) || s.Params.Expires.Sub(s.Params.Created) != time.Minute || len(s.Params.Nonce) != 88) {
					err = fmt.Errorf("signature %+v covers %v", s.Params, s.Components())
				}
				got <- fmt.Sprintf("%v %s", err, r.Header.Get("Signature-Agent"))
			}))
			tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, RootCAs: roots(p),
				SignatureKey: key, SignatureAgent: "https://bot.example", SignatureAgentDictionary: dict})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/"); err != nil {
				t.Fatal(err)
			}
			want := `<nil> "https://bot.example"`
			if dict {
				want = `<nil> sig1="https://bot.example"`
			}
			if g := <-got; g != want {
				t.Errorf("server saw %s, want %s", g, want)
			}
		})
	}
}
