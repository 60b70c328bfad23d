package server

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/tlsclient"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// TestHelloRetryKeepsFlags: a server that accepts P-256 only answers a
// flagged ClientHello with X25519MLKEM768 and X25519 key shares with a
// HelloRetryRequest; the second ClientHello is inspected and repeats the
// flags, the first one's stand, and the certificate is still asked for and
// received.
func TestHelloRetryKeepsFlags(t *testing.T) {
	p := testpki.New(t)
	s, err := New(Config{Files: Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA}, Now: func() time.Time { return testpki.Now },
		TLS: &tls.Config{Time: testpki.Clock, CurvePreferences: []tls.CurveID{tls.CurveP256}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	states := make(chan tls.ConnectionState, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		c := s.auth.WrapConn(raw)
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, s.base)
		tc.Handshake()
		states <- tc.ConnectionState()
	}()

	spec, err := tlsclient.Hello{Flags: tlsflags.Must(80), NextProtos: []string{"h2"}}.Spec()
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	cert, err := tls.LoadX509KeyPair(p.Clients["valid"][0], p.Clients["valid"][1])
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	uc := utls.UClient(raw, &utls.Config{Time: testpki.Clock, RootCAs: pool, ServerName: "127.0.0.1",
		GetClientCertificate: func(*utls.CertificateRequestInfo) (*utls.Certificate, error) {
			return &utls.Certificate{Certificate: cert.Certificate, PrivateKey: cert.PrivateKey}, nil
		}}, utls.HelloCustom)
	if err := uc.ApplyPreset(spec); err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	if err := uc.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	st := <-states
	if !st.HelloRetryRequest {
		t.Fatal("no HelloRetryRequest: the test did not test anything")
	}
	if len(st.PeerCertificates) != 1 || st.Version != tls.VersionTLS13 {
		t.Errorf("after HelloRetryRequest: %d peer certificates over %x, want the client's certificate over TLS 1.3", len(st.PeerCertificates), st.Version)
	}
}
