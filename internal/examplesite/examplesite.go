// Package examplesite sets up what the packages' examples run against: a
// development CA with server and client certificates, and a request-mTLS
// server on a loopback port.
package examplesite

import (
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/server"
)

// Certs writes a development CA, a server certificate for localhost and a
// client certificate for client.example into a new directory, as
// `gencert -dir` does, and returns the directory.
func Certs() string {
	dir, err := os.MkdirTemp("", "reqmtls-example")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := certs.WriteSet(certs.Options{Dir: dir}); err != nil {
		log.Fatal(err)
	}
	return dir
}

// Serve runs a Server with the certificates of dir on a loopback port.
func Serve(dir string) (*server.Server, string) {
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
