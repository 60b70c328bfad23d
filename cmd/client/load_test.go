package main

import (
	"context"
	"crypto/x509"
	"net/url"
	"testing"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/server"
)

func TestLoadStats(t *testing.T) {
	p := testpki.New(t)
	addr := startServer(t, p, server.PolicyRequest)
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	d, err := reqmtls.NewDialer(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, RootCAs: pool,
		CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1]})
	if err != nil {
		t.Fatal(err)
	}
	u := &url.URL{Scheme: "https", Host: addr, Path: "/debug"}
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
