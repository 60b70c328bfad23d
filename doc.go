// Package reqmtls is request mTLS for Go clients (crawlers, agents, bot
// platforms), and the names both sides share, on the stock toolchain; the
// site side is the package github.com/req-mtls/req-mtls/server.
//
// Request mTLS is a TLS 1.3 ClientHello flag (flag 80 of the TLS Flags
// extension, draft-ietf-tls-tlsflags; draft-jhoyla-req-mtls-flag-02) with
// which an automated client (a crawler, an agent, a bot platform) tells a
// server "I hold a client certificate; ask me for it". The server sends a
// CertificateRequest then, and only then, so that browsers are never
// prompted while bots are identified by certificate.
//
// # Servers
//
// Package server (github.com/req-mtls/req-mtls/server) adds request mTLS to
// any crypto/tls server, runs a whole HTTPS server as cmd/server does, and
// puts a gateway in front of any origin:
//
//	a, err := server.NewAuthenticator(server.Config{
//		Policy:    server.PolicyRequire,
//		BotCAFile: "bots.pem",
//	})
//	srv := &http.Server{
//		Handler:     handler,
//		TLSConfig:   a.TLSConfig(&tls.Config{Certificates: certs}),
//		ConnContext: server.ConnContext,
//	}
//	ln, err := net.Listen("tcp", ":443")
//	srv.ServeTLS(a.Listener(ln), "", "")
//
// It is a package of its own so that a crawler importing this one links
// none of what servers need (Prometheus, ACME, the PROXY protocol, file
// watching).
//
// # Clients
//
// A Transport is an http.RoundTripper for crawlers that sends the flags in
// the same ClientHello as cmd/client, answers a CertificateRequest with a
// certificate that it reloads when its files change (or one from
// GetClientCertificate, whose key may live in a KMS), resumes sessions per
// host and certificate, goes through the proxies the environment names,
// bounds connections per host, forgets hosts whose connections closed, and
// speaks HTTP/2 or HTTP/1.1 as the server chooses:
//
//	t, err := reqmtls.NewTransport(reqmtls.ClientConfig{
//		Flags:    reqmtls.RequestMTLSFlags,
//		CertFile: "bot.crt", KeyFile: "bot.key",
//	})
//	client := &http.Client{Transport: t}
//
// A Dialer gives one connection at a time, with what its handshake did
// (Handshake), for tools that report on it.
//
// # Any HTTP client
//
// A ForwardProxy (NewForwardProxy) is an http.Handler: an HTTP forward
// proxy that gives request mTLS to clients that cannot set TLS flags
// (curl, Python, Node, browsers). It terminates their CONNECT tunnels with
// leaves of its own root and reaches each site with a Transport; cmd/client
// -listen runs it.
package reqmtls
