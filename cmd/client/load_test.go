package main

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/url"
	"testing"
	"time"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/testpki"
)

func TestLoadStats(t *testing.T) {
	p := testpki.New(t)
	srv, err := reqmtls.NewServer(reqmtls.ServerConfig{CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientCAFile: p.RootCA,
		Now: func() time.Time { return testpki.Now }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	d, err := reqmtls.NewDialer(reqmtls.ClientConfig{Flags: reqmtls.RequestMTLSFlags, RootCAs: pool,
		CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1]})
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Scheme: "https", Host: ln.Addr().String(), Path: "/debug"}
	st := Run(context.Background(), d, &Request{URL: u, Method: "GET"}, Load{N: 20, Concurrency: 2, MaxBody: 1 << 20})
	if st.Requests != 20 || st.OK != 20 || st.Errors != 0 || st.Connections != 20 || st.Resumed < 17 || st.Status[200] != 20 || st.CertsSent < 1 {
		t.Errorf("stats %+v", st)
	}
	if st.Total.Count != 20 || st.Total.Min > st.Total.P50 || st.Total.P50 > st.Total.P99 || st.Total.P99 > st.Total.Max {
		t.Errorf("latencies %+v", st.Total)
	}
	st = Run(context.Background(), d, &Request{URL: u, Method: "GET"}, Load{N: 10, Concurrency: 2, KeepAlive: true, MaxBody: 1 << 20})
	if st.Connections != 2 || st.OK != 10 {
		t.Errorf("keepalive stats %+v", st)
	}
}
