// Command crawler fetches URLs as a request-mTLS bot: it sets flag 80 in the
// ClientHello and sends its certificate when the server asks for it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	reqmtls "github.com/req-mtls/req-mtls"
)

func main() {
	certFile := flag.String("cert", "client.crt", "client certificate (PEM)")
	keyFile := flag.String("key", "client.key", "client key (PEM)")
	caFile := flag.String("cacert", "rootCA.crt", "roots for servers (PEM); empty for the system roots")
	noFlag := flag.Bool("no-flag", false, "send no TLS flags, as a browser does")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: crawler [-cert FILE -key FILE] [-cacert FILE] [-no-flag] URL...")
		os.Exit(2)
	}
	cfg := reqmtls.ClientConfig{Flags: reqmtls.RequestMTLSFlags, CertFile: *certFile, KeyFile: *keyFile,
		OnHandshake: func(addr string, h reqmtls.Handshake) {
			fmt.Printf("handshake with %s: certificate requested: %t, sent: %t\n", addr, h.CertRequested, h.CertSent)
		}}
	if *noFlag {
		cfg.Flags = reqmtls.Flags{}
	}
	var err error
	if *caFile != "" {
		cfg.RootCAs, err = reqmtls.LoadCertPool(*caFile)
		check(err)
	}
	t, err := reqmtls.NewTransport(cfg)
	check(err)
	client := &http.Client{Transport: t, Timeout: time.Minute}
	for _, u := range flag.Args() {
		resp, err := client.Get(u)
		check(err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		check(err)
		fmt.Printf("%s %s\n%s", u, resp.Status, body)
	}
}

func check(err error) {
	if err == nil {
		return
	}
	msg := err.Error()
	var e *reqmtls.Error
	if errors.As(err, &e) {
		msg = e.Msg
		if e.Alert != "" && !strings.Contains(msg, e.Alert) {
			msg += " (TLS alert " + e.Alert + ")"
		}
	}
	fmt.Fprintln(os.Stderr, "crawler:", msg)
	os.Exit(1)
}
