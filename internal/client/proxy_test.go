package client

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/testutil"
)

// socksServer is a SOCKS5 proxy (RFC 1928, with RFC 1929's username and
// password when user is set) for tests: it records the address each
// CONNECT names, refuses forbidden.example (connection not allowed by
// ruleset), and connects names in hosts to their addresses.
type socksServer struct {
	user, pass string
	hosts      map[string]string

	mu      sync.Mutex
	targets []string
}

func startSOCKS5(t *testing.T, user, pass string, hosts map[string]string) (*socksServer, *url.URL) {
	t.Helper()
	s := &socksServer{user: user, pass: pass, hosts: hosts}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	u := &url.URL{Scheme: "socks5", Host: ln.Addr().String()}
	if user != "" {
		u.User = url.UserPassword(user, pass)
	}
	return s, u
}

func (s *socksServer) Targets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.targets...)
}

func (s *socksServer) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	read := func(n int) []byte {
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil
		}
		return b
	}
	head := read(2)
	if head == nil || head[0] != 5 {
		return
	}
	method := byte(0)
	if s.user != "" {
		method = 2
	}
	if !bytes.Contains(read(int(head[1])), []byte{method}) {
		c.Write([]byte{5, 0xff})
		return
	}
	c.Write([]byte{5, method})
	if method == 2 {
		if v := read(1); v == nil || v[0] != 1 {
			return
		}
		user := string(read(int(read(1)[0])))
		pass := string(read(int(read(1)[0])))
		if user != s.user || pass != s.pass {
			c.Write([]byte{1, 1})
			return
		}
		c.Write([]byte{1, 0})
	}
	req := read(4)
	if req == nil || req[1] != 1 {
		return
	}
	var host string
	switch req[3] {
	case 1:
		host = net.IP(read(4)).String()
	case 4:
		host = net.IP(read(16)).String()
	case 3:
		host = string(read(int(read(1)[0])))
	}
	port := strconv.Itoa(int(binary.BigEndian.Uint16(read(2))))
	s.mu.Lock()
	s.targets = append(s.targets, net.JoinHostPort(host, port))
	s.mu.Unlock()
	if host == "forbidden.example" {
		c.Write([]byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	if a, ok := s.hosts[host]; ok {
		host = a
	}
	up, err := net.Dial("tcp", net.JoinHostPort(host, port))
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	defer up.Close()
	c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	go func() { io.Copy(up, r); up.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, up)
}

// tlsProxy is an https proxy for tests: CONNECT (testutil.ConnectProxy)
// and plain http requests, forwarded, over TLS with the test PKI's server
// certificate, for 127.0.0.1. Targets lists the hosts asked for.
type tlsProxy struct {
	cp *testutil.ConnectProxy

	mu    sync.Mutex
	plain []string
}

func (tp *tlsProxy) Targets() []string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append(tp.cp.Tunnels(), tp.plain...)
}

func (tp *tlsProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		tp.cp.ServeHTTP(w, r)
		return
	}
	tp.mu.Lock()
	tp.plain = append(tp.plain, r.URL.Host)
	tp.mu.Unlock()
	out := r.Clone(r.Context())
	out.RequestURI = ""
	host, port, _ := net.SplitHostPort(r.URL.Host)
	if a, ok := tp.cp.Hosts[host]; ok {
		out.URL.Host = net.JoinHostPort(a, port)
	}
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func startTLSConnectProxy(t *testing.T, p *testpki.PKI, hosts map[string]string) (*tlsProxy, *url.URL) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tlsProxy{cp: &testutil.ConnectProxy{Hosts: hosts}}
	srv := &http.Server{Handler: tp, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, Time: testpki.Clock}))
	t.Cleanup(func() { srv.Close() })
	return tp, &url.URL{Scheme: "https", Host: ln.Addr().String()}
}

// TestProxySchemes: https and socks5 proxies work as with net/http's
// Proxy: an https site through an https proxy (CONNECT over TLS, the
// proxy verified with RootCAs), through socks5 and socks5h (with a
// username and password), and an http site through both; each proxy is
// asked for the URL's host by name. A refusal names the proxy and why.
func TestProxySchemes(t *testing.T) {
	p := testpki.New(t)
	site := testServer(t, p)
	_, sitePort, _ := net.SplitHostPort(site.addr)
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plainSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "plain ok") })}
	go plainSrv.Serve(plainLn)
	defer plainSrv.Close()
	_, plainPort, _ := net.SplitHostPort(plainLn.Addr().String())
	hosts := map[string]string{"localhost": "127.0.0.1"}

	tlsProxy, tlsProxyURL := startTLSConnectProxy(t, p, hosts)
	socks, socksURL := startSOCKS5(t, "", "", hosts)
	socksAuth, socksAuthURL := startSOCKS5(t, "bot", "s3cret", hosts)
	socksAuthURL.Scheme = "socks5h"
	for _, tc := range []struct {
		name    string
		proxy   *url.URL
		url     string
		want    string
		targets func() []string
	}{
		{"https", tlsProxyURL, "https://localhost:" + sitePort + "/", "HTTP/2.0 ok", tlsProxy.Targets},
		{"https_http", tlsProxyURL, "http://localhost:" + plainPort + "/", "plain ok", tlsProxy.Targets},
		{"socks5", socksURL, "https://localhost:" + sitePort + "/", "HTTP/2.0 ok", socks.Targets},
		{"socks5h_auth", socksAuthURL, "https://localhost:" + sitePort + "/", "HTTP/2.0 ok", socksAuth.Targets},
		{"socks5_http", socksURL, "http://localhost:" + plainPort + "/", "plain ok", socks.Targets},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hs []*Handshake
			tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p), Proxy: http.ProxyURL(tc.proxy)},
				OnHandshake: func(_ string, h *Handshake) { hs = append(hs, h) }})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.CloseIdleConnections()
			before := len(tc.targets())
			got, err := do(&http.Client{Transport: tr}, tc.url)
			if err != nil || got != tc.want {
				t.Fatalf("GET %s through %s: %q, %v; want %q", tc.url, tc.proxy.Redacted(), got, err, tc.want)
			}
			u, _ := url.Parse(tc.url)
			if targets := tc.targets()[before:]; len(targets) != 1 || targets[0] != u.Host {
				t.Errorf("the proxy was asked for %q, want [%s]", targets, u.Host)
			}
			if u.Scheme == "https" && (len(hs) != 1 || hs[0].Proxy != tc.proxy.Redacted()) {
				t.Errorf("handshakes %+v, want one through %s", hs, tc.proxy.Redacted())
			}
		})
	}

	wrongPass := *socksAuthURL
	wrongPass.User = url.UserPassword("bot", "wrong")
	for _, tc := range []struct {
		name  string
		proxy *url.URL
		url   string
		roots *x509.CertPool
		want  string
	}{
		{"socks5_refused", socksURL, "https://forbidden.example/", rootPool(p),
			"proxy " + socksURL.String() + " refused the tunnel to forbidden.example:443: connection not allowed by ruleset"},
		{"socks5_password", &wrongPass, "https://localhost:" + sitePort + "/", rootPool(p),
			"proxy " + wrongPass.Redacted() + " refused the username and password"},
		{"socks5_no_credentials", &url.URL{Scheme: "socks5", Host: socksAuthURL.Host}, "https://localhost:" + sitePort + "/", rootPool(p),
			"proxy socks5://" + socksAuthURL.Host + " wants credentials"},
		{"https_untrusted", tlsProxyURL, "https://localhost:" + sitePort + "/", x509.NewCertPool(),
			"proxy " + tlsProxyURL.String() + ": TLS handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{"ftp", &url.URL{Scheme: "ftp", Host: "127.0.0.1:21"}, "https://localhost:" + sitePort + "/", rootPool(p),
			`proxy ftp://127.0.0.1:21: scheme "ftp" is not supported (want http, https, socks5 or socks5h)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: tc.roots, Proxy: http.ProxyURL(tc.proxy)}})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.CloseIdleConnections()
			_, err = do(&http.Client{Transport: tr}, tc.url)
			var e *Error
			if !errors.As(err, &e) || e.Msg != tc.want {
				t.Errorf("GET %s through %s: %v, want %q", tc.url, tc.proxy.Redacted(), err, tc.want)
			}
			if strings.Contains(err.Error(), "wrong") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// TestResolveThroughProxyNamesHost: with Resolve and a proxy, the proxy
// is asked for the URL's host by name (CONNECT, SOCKS5), as curl does: it
// resolves names itself, and Resolve is for direct connections.
func TestResolveThroughProxyNamesHost(t *testing.T) {
	p := testpki.New(t)
	site := testServer(t, p)
	_, port, _ := net.SplitHostPort(site.addr)
	hosts := map[string]string{"localhost": "127.0.0.1"}
	cp, connectURL := testutil.StartConnectProxy(t, hosts)
	socks, socksURL := startSOCKS5(t, "", "", hosts)
	for _, tc := range []struct {
		name    string
		proxy   *url.URL
		targets func() []string
	}{
		{"connect", connectURL, cp.Tunnels},
		{"socks5", socksURL, socks.Targets},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hs []*Handshake
			tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p), Proxy: http.ProxyURL(tc.proxy),
				Resolve: map[string]string{"localhost:" + port: site.addr}},
				OnHandshake: func(_ string, h *Handshake) { hs = append(hs, h) }})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.CloseIdleConnections()
			if got, err := do(&http.Client{Transport: tr}, "https://localhost:"+port+"/"); err != nil || got != "HTTP/2.0 ok" {
				t.Fatalf("GET through %s: %q, %v", tc.proxy, got, err)
			}
			if targets := tc.targets(); len(targets) != 1 || targets[0] != "localhost:"+port {
				t.Errorf("the proxy was asked for %q, want [localhost:%s]", targets, port)
			}
			if len(hs) != 1 || hs[0].Addr != "localhost:"+port {
				t.Errorf("handshakes %+v, want one with Addr localhost:%s", hs, port)
			}
		})
	}
}
