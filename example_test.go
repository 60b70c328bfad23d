package reqmtls_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/examplesite"
)

// A crawler's http.Client that sends flag 80 and its certificate when asked.
func ExampleNewTransport() {
	dir := examplesite.Certs()
	defer os.RemoveAll(dir)
	srv, addr := examplesite.Serve(dir)
	defer srv.Shutdown(context.Background())

	roots, err := reqmtls.LoadCertPool(filepath.Join(dir, "rootCA.crt"))
	if err != nil {
		log.Fatal(err)
	}
	t, err := reqmtls.NewTransport(reqmtls.ClientConfig{
		Flags:    reqmtls.RequestMTLSFlags,
		CertFile: filepath.Join(dir, "client.crt"),
		KeyFile:  filepath.Join(dir, "client.key"),
		RootCAs:  roots,
		OnHandshake: func(addr string, h reqmtls.Handshake) {
			fmt.Printf("certificate requested: %t, sent: %t\n", h.CertRequested, h.CertSent)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	client := &http.Client{Transport: t}
	resp, err := client.Get("https://" + addr + "/debug")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	// Output:
	// certificate requested: true, sent: true
	// Client sent TLS Flags: [80]
	// Mutually supported TLS Flags: [80]
	// Client cert requested: true
	// Peer certificate received: true
	// Cert received: client.example
	// Cert validated: true
}

func ExampleParseFlags() {
	f, err := reqmtls.ParseFlags("170,0x50,8")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(f, f.Has(reqmtls.FlagRequestMTLS))
	// Output:
	// [8 80 170] true
}

func ExampleFlags_ExtensionData() {
	data, _ := reqmtls.RequestMTLSFlags.ExtensionData()
	fmt.Printf("%x\n", data)
	f, err := reqmtls.ParseFlagsExtension(data)
	fmt.Println(f, err)
	_, err = reqmtls.ParseFlagsExtension([]byte{2, 0x50, 0})
	fmt.Println(err != nil)
	// Output:
	// 0b0000000000000000000001
	// [80] <nil>
	// true
}
