package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/examplesite"
	"github.com/req-mtls/req-mtls/server"
)

// Request mTLS added to a plain net/http server that has its own
// certificate: wrap the listener, build the TLS config on your own, and
// read per request what the handshake decided.
func ExampleAuthenticator_TLSConfig() {
	dir := examplesite.Certs()
	defer os.RemoveAll(dir)

	a, err := server.NewAuthenticator(server.Config{
		Policy:    server.PolicyVerify,
		BotCAFile: filepath.Join(dir, "rootCA.crt"), // roots for bots' certificates
	})
	if err != nil {
		log.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig:   a.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		ConnContext: server.ConnContext,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := server.RequestInfo(r)
			if info.Validated() {
				fmt.Fprintf(w, "hello, %s", info.Chain[0].DNSNames[0])
				return
			}
			fmt.Fprintf(w, "hello, stranger (certificate requested: %t)", info.CertRequested)
		}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.ServeTLS(a.Listener(ln), "", "")
	defer srv.Close()

	roots, _ := reqmtls.LoadCertPool(filepath.Join(dir, "rootCA.crt"))
	for _, cfg := range []reqmtls.ClientConfig{
		{RootCAs: roots}, // a browser-like client: no flags
		{RootCAs: roots, Flags: reqmtls.RequestMTLSFlags, CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key")},
	} {
		t, err := reqmtls.NewTransport(cfg)
		if err != nil {
			log.Fatal(err)
		}
		resp, err := (&http.Client{Transport: t}).Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// hello, stranger (certificate requested: false)
	// hello, client.example
}

// A whole request-mTLS HTTPS server, as cmd/server runs it, and one
// connection from a Dialer, with what its handshake did.
func ExampleNew() {
	dir := examplesite.Certs()
	defer os.RemoveAll(dir)
	srv, addr := examplesite.Serve(dir)
	defer srv.Shutdown(context.Background())

	roots, _ := reqmtls.LoadCertPool(filepath.Join(dir, "rootCA.crt"))
	d, err := reqmtls.NewDialer(reqmtls.ClientConfig{RootCAs: roots, Flags: reqmtls.RequestMTLSFlags})
	if err != nil {
		log.Fatal(err)
	}
	cc, err := d.Dial(context.Background(), &url.URL{Scheme: "https", Host: addr})
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	h := cc.Handshake()
	fmt.Println(h.Version, h.ALPN, "flags", h.FlagsSent, "certificate requested:", h.CertRequested)
	// Output:
	// TLS 1.3 h2 flags [80] certificate requested: true
}
