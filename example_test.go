package reqmtls_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/server"
)

// exampleCerts writes a development CA, a server certificate for localhost
// and a client certificate for client.example into a new directory, as
// `gencert -dir` does, and returns the directory.
func exampleCerts() string {
	dir, err := os.MkdirTemp("", "reqmtls-example")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := certs.WriteSet(certs.Options{Dir: dir}); err != nil {
		log.Fatal(err)
	}
	return dir
}

// exampleServer runs a Server on a loopback port.
func exampleServer(dir string) (*server.Server, string) {
	srv, err := server.New(server.Config{
		CertFile:     filepath.Join(dir, "server.crt"),
		KeyFile:      filepath.Join(dir, "server.key"),
		ClientCAFile: filepath.Join(dir, "rootCA.crt"),
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	return srv, ln.Addr().String()
}

// A crawler's http.Client that sends flag 80 and its certificate when asked.
func ExampleNewTransport() {
	dir := exampleCerts()
	defer os.RemoveAll(dir)
	srv, addr := exampleServer(dir)
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
