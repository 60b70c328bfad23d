package client

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/clienthello"
	"github.com/req-mtls/req-mtls/internal/server"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

func rootPool(p *testpki.PKI) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	return pool
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// TestFlagsOnTheWire reads the ClientHello with a raw listener (the
// inspection Conn) and checks the exact tls_flags bytes.
func TestFlagsOnTheWire(t *testing.T) {
	p := testpki.New(t)
	for _, tc := range []struct {
		list      string
		codepoint uint16
		want      string // extension_data in hex, "" for no extension
	}{
		{"80", 0, "0b0000000000000000000001"},
		{"0x50", 0, "0b0000000000000000000001"},
		{"8,170,12", 0, "1600110000000000000000000000000000000000000004"},
		{"80", 62, "0b0000000000000000000001"},
		{"", 0, ""},
	} {
		t.Run(tc.list+fmt.Sprint(tc.codepoint), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got := make(chan *clienthello.Summary, 1)
			go func() {
				c, err := clienthello.NewListener(ln).Accept()
				if err != nil {
					got <- nil
					return
				}
				defer c.Close()
				c.Read(make([]byte, 1))
				got <- c.(*clienthello.Conn).Summary()
			}()
			var flags tlsflags.Set
			if tc.list != "" {
				flags, _ = tlsflags.ParseList(tc.list)
			}
			cl, err := New(Config{Time: testpki.Clock, Flags: flags, Codepoint: tc.codepoint, RootCAs: rootPool(p), Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			cl.Dial(context.Background(), mustURL("https://"+ln.Addr().String()+"/"))
			s := <-got
			if s == nil {
				t.Fatal("no ClientHello")
			}
			raw := rawExtension(t, ln, s, tc.codepoint)
			if raw != tc.want {
				t.Errorf("tls_flags extension_data = %q, want %q", raw, tc.want)
			}
		})
	}
}

// rawExtension finds the flags extension in a summary and re-encodes its
// data, which the summary decoded strictly.
func rawExtension(t *testing.T, _ net.Listener, s *clienthello.Summary, codepoint uint16) string {
	if codepoint == 0 {
		codepoint = tlsflags.CodepointExperimental
	}
	found := false
	for _, id := range s.Extensions {
		if id == codepoint {
			found = true
		}
		if id == tlsflags.CodepointExperimental && codepoint != id || id == tlsflags.CodepointBoringSSL && codepoint != id {
			t.Errorf("extension %#x sent, want only %#x", id, codepoint)
		}
	}
	if !found {
		return ""
	}
	data, err := s.Flags.ExtensionData()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", data)
}

// plainServer runs a stock crypto/tls HTTPS server (no inspection) with
// the given client-auth setting, HTTP/1.1 only when h1.
func plainServer(t *testing.T, p *testpki.PKI, auth tls.ClientAuthType, h1 bool) (string, chan tls.ConnectionState) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	states := make(chan tls.ConnectionState, 16)
	cfg := &tls.Config{Time: testpki.Clock, Certificates: []tls.Certificate{cert}, ClientAuth: auth, ClientCAs: rootPool(p)}
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		states <- *r.TLS
		fmt.Fprintf(w, "%s certs=%d", r.Proto, len(r.TLS.PeerCertificates))
	})}
	if h1 {
		cfg.NextProtos = []string{"http/1.1"}
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	} else {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	srv.TLSConfig = cfg
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String() + "/", states
}

func get(t *testing.T, cl *Client, u string) (Handshake, *http.Response, string, error) {
	t.Helper()
	cn, err := cl.Dial(context.Background(), mustURL(u))
	if err != nil {
		return Handshake{}, nil, "", err
	}
	defer cn.Close()
	req, _ := http.NewRequest("GET", u, nil)
	resp, body, err := cl.Do(context.Background(), cn, req, 1<<20)
	return cn.Handshake, resp, string(body), err
}

// TestCertificateOnlyWhenAsked: against a plain crypto/tls server, the
// certificate goes out only when a CertificateRequest comes, over TLS 1.3
// and 1.2, h2 and HTTP/1.1.
func TestCertificateOnlyWhenAsked(t *testing.T) {
	p := testpki.New(t)
	for _, tc := range []struct {
		name  string
		auth  tls.ClientAuthType
		h1    bool
		tls12 bool
		sent  bool
		proto string
	}{
		{"NotAsked_h2", tls.NoClientCert, false, false, false, "HTTP/2.0"},
		{"Asked_h2", tls.RequestClientCert, false, false, true, "HTTP/2.0"},
		{"Asked_http1", tls.RequireAndVerifyClientCert, true, false, true, "HTTP/1.1"},
		{"NotAsked_http1", tls.NoClientCert, true, false, false, "HTTP/1.1"},
		{"Asked_TLS12", tls.RequireAndVerifyClientCert, false, true, true, "HTTP/2.0"},
		{"NotAsked_TLS12", tls.NoClientCert, true, true, false, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, states := plainServer(t, p, tc.auth, tc.h1)
			cl, err := New(Config{Time: testpki.Clock, Flags: tlsflags.Must(80), RootCAs: rootPool(p), TLS12Only: tc.tls12,
				CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1]})
			if err != nil {
				t.Fatal(err)
			}
			hs, resp, body, err := get(t, cl, u)
			if err != nil {
				t.Fatal(err)
			}
			st := <-states
			if hs.CertSent != tc.sent || (len(st.PeerCertificates) > 0) != tc.sent || hs.CertRequested != tc.sent {
				t.Errorf("requested %v sent %v, server got %d certs; want %v", hs.CertRequested, hs.CertSent, len(st.PeerCertificates), tc.sent)
			}
			if resp.Proto != tc.proto || !strings.HasPrefix(body, tc.proto) {
				t.Errorf("proto %s body %q, want %s", resp.Proto, body, tc.proto)
			}
			if tc.tls12 != (st.Version == tls.VersionTLS12) {
				t.Errorf("version %x", st.Version)
			}
		})
	}
}

// TestSendsWhenIssuerNotListed: the server's CA list names another CA; the
// certificate is still sent, and the mismatch is reported.
func TestSendsWhenIssuerNotListed(t *testing.T) {
	p := testpki.New(t)
	cert, _ := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	otherRoots, err := certs.LoadPool(p.OtherCA)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Time: testpki.Clock, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert, ClientCAs: otherRoots})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "certs=%d", len(r.TLS.PeerCertificates))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	cl, _ := New(Config{Time: testpki.Clock, Flags: tlsflags.Must(80), RootCAs: rootPool(p), CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1]})
	hs, _, body, err := get(t, cl, "https://"+ln.Addr().String()+"/")
	if err != nil {
		t.Fatal(err)
	}
	if body != "certs=1" || hs.CASMatch == nil || *hs.CASMatch {
		t.Errorf("body %q, issuer listed %v", body, hs.CASMatch)
	}
}

func TestResumeAndRotation(t *testing.T) {
	p, p2 := testpki.New(t), testpki.New(t)
	u, states := plainServer(t, p, tls.RequestClientCert, false)
	dir := t.TempDir()
	certFile, keyFile := dir+"/c.crt", dir+"/c.key"
	cp := func(src, dst string) {
		data, _ := os.ReadFile(src)
		os.WriteFile(dst+".tmp", data, 0o600)
		os.Rename(dst+".tmp", dst)
	}
	cp(p.Clients["valid"][0], certFile)
	cp(p.Clients["valid"][1], keyFile)
	var warnings []string
	cl, err := New(Config{Time: testpki.Clock, Flags: tlsflags.Must(80), RootCAs: rootPool(p), Resume: true, CertFile: certFile, KeyFile: keyFile,
		Warn: func(f string, a ...any) { warnings = append(warnings, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		st := <-states
		if len(st.PeerCertificates) == 0 {
			return "none"
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	if _, _, _, err := get(t, cl, u); err != nil {
		t.Fatal(err)
	}
	first := serial()
	hs, _, _, err := get(t, cl, u)
	if err != nil || !hs.Resumed {
		t.Fatalf("second connection: resumed %v, %v", hs.Resumed, err)
	}
	serial()
	// Rotate: a broken pair first (kept the last good one, warned), then a
	// good new one (used on the next full handshake).
	os.WriteFile(certFile, []byte("garbage"), 0o600)
	if _, _, _, err := get(t, cl, u); err != nil {
		t.Fatal(err)
	}
	if serial() != first || len(warnings) != 1 {
		t.Fatalf("broken file: want the last good certificate and one warning, got %q", warnings)
	}
	cp(p2.Clients["valid"][0], certFile)
	cp(p2.Clients["valid"][1], keyFile)
	// The session made with the old certificate is not resumed: the
	// server sees the new one at once.
	hs, _, _, err = get(t, cl, u)
	if err != nil {
		t.Fatal(err)
	}
	if s := serial(); s == first || s == "none" || hs.Resumed {
		t.Fatalf("rotation not picked up: serial %s, resumed %t", s, hs.Resumed)
	}
	// And sessions of the new certificate resume.
	if hs, _, _, err = get(t, cl, u); err != nil || !hs.Resumed {
		t.Fatalf("after rotation: resumed %t, %v", hs.Resumed, err)
	}
	if s := serial(); s == first {
		t.Fatal("the old identity came back")
	}
}

func TestErrors(t *testing.T) {
	p := testpki.New(t)
	// Connection refused: a port that was just free.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	cl, _ := New(Config{Time: testpki.Clock, RootCAs: rootPool(p), Timeout: 2 * time.Second})
	_, _, _, err := get(t, cl, "https://"+addr+"/")
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("refused: %v", err)
	}

	// Timeout: a server that accepts and says nothing.
	silent, _ := net.Listen("tcp", "127.0.0.1:0")
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cl, _ = New(Config{Time: testpki.Clock, RootCAs: rootPool(p), Timeout: 200 * time.Millisecond})
	_, _, _, err = get(t, cl, "https://"+silent.Addr().String()+"/")
	var e *Error
	// The connection was made: the handshake is what stalled.
	if want := "TLS handshake with " + silent.Addr().String() + ": timed out after 200ms"; !errors.As(err, &e) || e.Msg != want || !strings.Contains(e.Hint, "accepted the connection") {
		t.Errorf("stalled handshake: %v (hint %q), want %q", err, e.Hint, want)
	}

	// Unknown server CA: the system roots do not know the test root.
	u, _ := plainServer(t, p, tls.NoClientCert, false)
	cl, _ = New(Config{Time: testpki.Clock, RootCAs: x509.NewCertPool()})
	_, _, _, err = get(t, cl, u)
	if !errors.As(err, &e) || !strings.Contains(e.Msg, "not trusted") || !strings.Contains(e.Hint, "RootCAs") {
		t.Errorf("unknown CA: %v", err)
	}

	// Refusals by the project's server (which lets the client read its
	// alert) come as alerts by name.
	srv, err := server.New(server.Config{Policy: auth.PolicyRequire,
		Files:  server.Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:    func() time.Time { return testpki.Now }})
	if err != nil {
		t.Fatal(err)
	}
	sln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(sln)
	defer srv.Shutdown(context.Background())
	su := "https://" + sln.Addr().String() + "/debug"
	cl, _ = New(Config{Time: testpki.Clock, Flags: tlsflags.Must(80), RootCAs: rootPool(p)})
	_, _, _, err = get(t, cl, su)
	if !errors.As(err, &e) || e.Msg != "server requires a client certificate and none was sent: certificate_required" ||
		e.Alert != "certificate_required" || e.Hint != "give one in CertFile and KeyFile (or GetClientCertificate), issued by a CA the server trusts" {
		t.Errorf("certificate required: %v (%+v)", err, e)
	}
	cl, _ = New(Config{Time: testpki.Clock, Flags: tlsflags.Must(80), RootCAs: rootPool(p), CertFile: p.Clients["other-ca"][0], KeyFile: p.Clients["other-ca"][1]})
	_, _, _, err = get(t, cl, su)
	if err == nil || err.Error() != "server rejected the client certificate: bad_certificate" {
		t.Errorf("other CA: %v", err)
	}
	// A stock crypto/tls server names the reason differently.
	u, _ = plainServer(t, p, tls.RequireAndVerifyClientCert, false)
	_, _, _, err = get(t, cl, u)
	if err == nil || !strings.HasPrefix(err.Error(), "server rejected the client certificate") && !strings.Contains(err.Error(), "closed the connection") {
		t.Errorf("other CA, stock server: %v", err)
	}

	// DNS failures read as such.
	if err := explain(&net.DNSError{Name: "nowhere.invalid", Err: "no such host"}, "connect"); err.Error() != `cannot resolve "nowhere.invalid": no such host` ||
		!strings.Contains(err.(*Error).Hint, "check the host name") {
		t.Errorf("dns: %v", err)
	}
	if _, err := New(Config{Time: testpki.Clock, Resolve: map[string]string{"no-port": "127.0.0.1:1"}}); err == nil {
		t.Error("Resolve key without a port accepted")
	}

	// Only one of -cert/-key, and unreadable files.
	if _, err := New(Config{Time: testpki.Clock, CertFile: p.Clients["valid"][0]}); err == nil {
		t.Error("cert without key accepted")
	}
	if _, err := New(Config{Time: testpki.Clock, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["other-ca"][1]}); err == nil || !strings.Contains(err.Error(), "load client certificate") {
		t.Errorf("mismatched pair: %v", err)
	}
}

// TestDNStringEscapes: a CA name from a CertificateRequest that holds a
// newline or an escape sequence prints as one line of visible escapes.
func TestDNStringEscapes(t *testing.T) {
	raw, err := asn1.Marshal(pkix.Name{CommonName: "evil\n* client certificate sent\x1b[0m"}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := dnString(raw), `CN=evil\n* client certificate sent\x1b[0m`; got != want {
		t.Errorf("dnString = %q, want %q", got, want)
	}
}

// TestResolveServerNameInsecure: Resolve connects elsewhere and keeps the
// URL's host for SNI and Host; ServerName replaces the SNI and the name
// verified; InsecureSkipVerify accepts an unknown root; the handshake
// describes the server's certificate.
func TestResolveServerNameInsecure(t *testing.T) {
	p := testpki.New(t)
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "sni=%s host=%s", r.TLS.ServerName, r.Host)
	}), TLSConfig: &tls.Config{Time: testpki.Clock, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	resolve := map[string]string{"bot.test:" + port: ln.Addr().String(), "LocalHost:" + port: ln.Addr().String()}
	for _, tc := range []struct {
		name string
		cfg  Config
		url  string
		body string // or the error
	}{
		{"Resolve", Config{Time: testpki.Clock, Resolve: resolve, RootCAs: rootPool(p)}, "https://LOCALHOST:" + port + "/",
			"sni=LOCALHOST host=LOCALHOST:" + port},
		{"ResolveAndServerName", Config{Time: testpki.Clock, Resolve: resolve, ServerName: "localhost", RootCAs: rootPool(p)}, "https://bot.test:" + port + "/",
			"sni=localhost host=bot.test:" + port},
		{"ResolveWrongName", Config{Time: testpki.Clock, Resolve: resolve, RootCAs: rootPool(p)}, "https://bot.test:" + port + "/",
			"error: server certificate does not match the host: x509: certificate is valid for localhost, not bot.test"},
		{"ServerNameMismatch", Config{Time: testpki.Clock, ServerName: "bot.test", RootCAs: rootPool(p)}, "https://" + ln.Addr().String() + "/",
			"error: server certificate does not match the host: x509: certificate is valid for localhost, not bot.test"},
		{"UnknownRoot", Config{Time: testpki.Clock, ServerName: "localhost", RootCAs: x509.NewCertPool()}, "https://" + ln.Addr().String() + "/",
			"error: server certificate is not trusted: signed by an unknown authority"},
		{"Insecure", Config{Time: testpki.Clock, ServerName: "bot.test", RootCAs: x509.NewCertPool(), InsecureSkipVerify: true}, "https://" + ln.Addr().String() + "/",
			"sni=bot.test host=" + ln.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Timeout = 5 * time.Second
			cl, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			hs, _, body, err := get(t, cl, tc.url)
			if err != nil {
				body = "error: " + err.Error()
			}
			if body != tc.body {
				t.Fatalf("got  %q\nwant %q", body, tc.body)
			}
			if err != nil {
				return
			}
			if hs.Addr != ln.Addr().String() || hs.Verified == tc.cfg.InsecureSkipVerify {
				t.Errorf("addr %s, verified %v", hs.Addr, hs.Verified)
			}
			sc := hs.ServerCert
			sum := sha256.Sum256(cert.Certificate[0])
			if sc == nil || sc.Subject != "CN=localhost" || sc.Issuer != "CN=test client root" ||
				strings.Join(sc.SANs, " ") != "DNS:localhost IP:127.0.0.1 IP:::1" || sc.SHA256 != hex.EncodeToString(sum[:]) ||
				!sc.NotAfter.Equal(cert.Leaf.NotAfter) || len(hs.PeerCertificates) != 1 {
				t.Errorf("server certificate %+v", sc)
			}
		})
	}
}
