package testutil

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/testpki"
)

// ServeRequestMTLS serves h over TLS on a loopback port with request mTLS:
// p's server certificate, a client certificate asked for when flag 80
// comes and checked against p's root, both at the clock now. opts adjust
// the TLS configuration. It returns the address; the server stops when
// the test ends.
func ServeRequestMTLS(t testing.TB, p *testpki.PKI, now func() time.Time, h http.Handler, opts ...func(*tls.Config)) string {
	t.Helper()
	a, err := auth.New(auth.Config{ClientCAFile: p.RootCA, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc := a.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, Time: now})
	for _, o := range opts {
		o(tc)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(tls.NewListener(a.NewListener(ln), tc))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}
