// Command server adds request mTLS to a plain net/http server: browsers are
// never asked for a certificate, flagged bots are, and a bot whose
// certificate validates is greeted by its DNS name.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/req-mtls/req-mtls/server"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "address to listen on")
	certFile := flag.String("cert", "server.crt", "server certificate (PEM)")
	keyFile := flag.String("key", "server.key", "server key (PEM)")
	botCA := flag.String("bot-cacert", "rootCA.crt", "roots for bot certificates (PEM)")
	policy := flag.String("policy", "verify", "request, verify, require or always")
	flag.Parse()
	p, err := server.ParsePolicy(*policy)
	check(err)
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	check(err)
	a, err := server.NewAuthenticator(server.Config{Policy: p, BotCAFile: *botCA})
	check(err)
	srv := &http.Server{
		Handler:     http.HandlerFunc(greet),
		TLSConfig:   a.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		ConnContext: server.ConnContext,
	}
	ln, err := net.Listen("tcp", *addr)
	check(err)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() { check(a.Watch(ctx)) }() // reloads -bot-cacert when it changes
	go func() {
		if err := srv.ServeTLS(a.Listener(ln), "", ""); err != http.ErrServerClosed {
			log.Fatal(err)
		}
	}()
	log.Printf("listening on %s", ln.Addr())
	<-ctx.Done()
	log.Print("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	check(srv.Shutdown(ctx))
}

func greet(w http.ResponseWriter, r *http.Request) {
	info := server.RequestInfo(r)
	if info.Validated() && len(info.Chain[0].DNSNames) > 0 {
		fmt.Fprintf(w, "hello, bot %s\n", info.Chain[0].DNSNames[0])
		return
	}
	fmt.Fprintf(w, "hello, browser or unidentified client (certificate requested: %t)\n", info.CertRequested)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
