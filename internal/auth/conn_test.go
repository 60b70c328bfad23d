package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testpki"
)

// blockReads lets a crypto/tls client send its ClientHello and then stall
// until stop is closed.
type blockReads struct {
	net.Conn
	stop chan struct{}
}

func (b blockReads) Read(p []byte) (int, error) {
	<-b.stop
	return 0, net.ErrClosed
}

// Close from another goroutine while the handshake waits for the client's
// second flight (as http.Server.Shutdown does to StateNew conns after 5 s,
// or a user's watchdog).
func TestCloseDuringHandshake(t *testing.T) {
	p := testpki.New(t)
	a, err := New(Config{ClientCAFile: p.RootCA, Now: func() time.Time { return testpki.Now }})
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	cfg := a.TLSConfig(&tls.Config{Time: testpki.Clock, Certificates: []tls.Certificate{cert}})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	stop := make(chan struct{})
	clientDone := make(chan struct{})
	defer func() { close(stop); <-clientDone }()
	go func() {
		defer close(clientDone)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		pool := x509.NewCertPool()
		pool.AddCert(p.CA.Cert)
		tls.Client(blockReads{c, stop}, &tls.Config{Time: testpki.Clock, RootCAs: pool, ServerName: "localhost"}).Handshake()
	}()
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ac := a.WrapConn(raw)
	tc := tls.Server(ac, cfg)
	done := make(chan time.Time, 1)
	go func() {
		err := tc.Handshake()
		t.Logf("handshake: %v at %v", err, time.Now().Format("15:04:05.000"))
		done <- time.Now()
	}()
	time.Sleep(300 * time.Millisecond)
	closed := time.Now()
	t.Logf("close at %v", closed.Format("15:04:05.000"))
	tc.Close()
	end := <-done
	t.Logf("helloSeen=%v handshakeOK=%v", ac.HelloSeen(), ac.handshakeOK.Load())
	t.Logf("handshake goroutine returned %v after Close", end.Sub(closed).Round(time.Millisecond))
}

// A busy directory (a file written every 100 ms next to the CA bundle): does a
// change of the bundle get loaded before the backstop?
func TestWatchBusyDirectory(t *testing.T) {
	p := testpki.New(t)
	ca := p.Dir + "/watched-ca.pem"
	data, _ := os.ReadFile(p.RootCA)
	os.WriteFile(ca, data, 0o600)
	a, err := New(Config{ClientCAFile: ca, RecheckInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Watch(ctx)
	go func() {
		for ctx.Err() == nil {
			os.WriteFile(p.Dir+"/app.log", []byte(time.Now().String()), 0o600)
			time.Sleep(100 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	old := a.state.Load().client
	other, _ := os.ReadFile(p.OtherCA)
	os.WriteFile(ca, other, 0o600)
	start := time.Now()
	for time.Since(start) < 5*time.Second && a.state.Load().client == old {
		time.Sleep(50 * time.Millisecond)
	}
	if a.state.Load().client == old {
		t.Errorf("CA bundle change not loaded within 5 s while a neighbour file is written every 100 ms (debounce never fires; only the %v backstop would)", time.Minute)
	} else {
		t.Logf("reloaded after %v", time.Since(start))
	}
}

// TestMinVersionKept: a base config's explicit MinVersion stands; only an
// unset one becomes TLS 1.2.
func TestMinVersionKept(t *testing.T) {
	p := testpki.New(t)
	a, err := New(Config{ClientCAFile: p.RootCA})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ base, want uint16 }{{0, tls.VersionTLS12}, {tls.VersionTLS11, tls.VersionTLS11}, {tls.VersionTLS13, tls.VersionTLS13}} {
		b := &binding{a: a, base: &tls.Config{Time: testpki.Clock, MinVersion: tc.base}, keys: &tls.Config{Time: testpki.Clock}}
		if got := b.forConn(nil).MinVersion; got != tc.want {
			t.Errorf("base MinVersion %x: %x, want %x", tc.base, got, tc.want)
		}
	}
}

// TestVerifyCache: a chain that validated is remembered for its store's
// contents and within its validity window only; failures are not.
func TestVerifyCache(t *testing.T) {
	p := testpki.New(t)
	client, err := loadStore(StoreClient, p.RootCA)
	if err != nil {
		t.Fatal(err)
	}
	other, err := loadStore(StoreClient, p.OtherCA)
	if err != nil {
		t.Fatal(err)
	}
	load := func(name string) []*x509.Certificate {
		c, err := tls.LoadX509KeyPair(p.Clients[name][0], p.Clients[name][1])
		if err != nil {
			t.Fatal(err)
		}
		return []*x509.Certificate{c.Leaf}
	}
	var vc verifyCache
	valid := load("valid")
	path, err := vc.validate(valid, client, nil, testpki.Now)
	if err != nil || len(path) != 2 || path[1] != client.certs[0] {
		t.Fatalf("first validation: %v, path of %d", err, len(path))
	}
	// From the cache, with the same verified path.
	if path, err := vc.validate(valid, client, nil, testpki.Now.Add(time.Hour)); err != nil || len(vc.m) != 1 || len(path) != 2 {
		t.Fatalf("second validation: %v, %d entries, path of %d", err, len(vc.m), len(path))
	}
	// Past the leaf's NotAfter the cached entry does not answer.
	if _, err := vc.validate(valid, client, nil, valid[0].NotAfter.Add(time.Second)); err == nil {
		t.Error("an expired certificate validated from the cache")
	}
	// Another store's contents: verified afresh, and refused.
	if _, err := vc.validate(valid, other, nil, testpki.Now); err == nil {
		t.Error("validated against another store through the cache")
	}
	if _, err := vc.validate(load("other-ca"), client, nil, testpki.Now); err == nil || len(vc.m) != 1 {
		t.Errorf("other CA's certificate: %v, %d entries (failures must not be cached)", err, len(vc.m))
	}
}

// TestConnTrackedByDecider: a connection accepted through one
// Authenticator (a server's listener) and decided by another (the site its
// SNI named) is tracked by the one that decided, whose trust stores its
// certificate was checked against: a reload of the other's never closes
// it, and closing it forgets it.
func TestConnTrackedByDecider(t *testing.T) {
	p := testpki.New(t)
	now := func() time.Time { return testpki.Now }
	lis, err := New(Config{Policy: PolicyVerify, ClientCAFile: p.RootCA, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	// (PolicyAlways: the client sends its certificate without the flag.)
	site, err := New(Config{Policy: PolicyAlways, ClientCAFile: p.OtherCA, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	cfg := site.TLSConfig(&tls.Config{Time: testpki.Clock, Certificates: []tls.Certificate{cert}})
	clientCert, err := tls.LoadX509KeyPair(p.Clients["other-ca"][0], p.Clients["other-ca"][1])
	if err != nil {
		t.Fatal(err)
	}
	cc, sc := net.Pipe()
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	go tls.Client(cc, &tls.Config{Time: testpki.Clock, RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &clientCert, nil }}).Handshake()
	ac := lis.WrapConn(sc)
	tc := tls.Server(ac, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if d := ac.Decision(); d == nil || !d.Validated() {
		t.Fatalf("decision %+v, want a validated certificate", d)
	}
	inLis, inSite := tracked(lis, ac), tracked(site, ac)
	if inLis || !inSite {
		t.Fatalf("tracked by the listener's Authenticator: %v, by the deciding one: %v; want false, true", inLis, inSite)
	}
	lis.Reload("test")
	if ac.closed.Load() {
		t.Fatal("a reload of the listener's Authenticator closed a connection the other decided")
	}
	tc.Close()
	if tracked(site, ac) {
		t.Error("closed, and still tracked")
	}
}

func tracked(a *Authenticator, c *Conn) bool {
	a.connsMu.Lock()
	defer a.connsMu.Unlock()
	_, ok := a.conns[c]
	return ok
}
