// Package reqmtls is request mTLS for Go servers and Go clients, on the stock
// toolchain.
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
// An Authenticator adds request mTLS to any crypto/tls server. Wrap the
// listener, build the TLS config on your own, and read what happened per
// request:
//
//	a, err := reqmtls.NewAuthenticator(reqmtls.ServerConfig{
//		Policy:    reqmtls.PolicyRequire,
//		BotCAFile: "bots.pem",
//	})
//	srv := &http.Server{
//		Handler:     handler,
//		TLSConfig:   a.TLSConfig(&tls.Config{Certificates: certs}),
//		ConnContext: reqmtls.ConnContext,
//	}
//	ln, err := net.Listen("tcp", ":443")
//	srv.ServeTLS(a.Listener(ln), "", "")
//
//	func handler(w http.ResponseWriter, r *http.Request) {
//		info := reqmtls.RequestInfo(r)
//		if info.Validated() { ... info.Chain[0] ... }
//	}
//
// The Authenticator decides, per connection, whether to send a
// CertificateRequest (Policy), checks a certificate against the store meant
// for the client (a separate bot store for flagged clients, if given),
// records the decision on the connection (Info), keeps TLS 1.3 session
// resumption from crossing decisions, and reloads its files when they
// change (Watch) or when asked (Reload). Server runs a whole HTTPS server
// with the reference's /debug page, as cmd/server does.
//
// # Clients
//
// A Transport is an http.RoundTripper for crawlers that sends the flags in
// the same ClientHello as cmd/client, answers a CertificateRequest with a
// certificate that it reloads when its files change, resumes sessions per
// host, and speaks HTTP/2 or HTTP/1.1 as the server chooses:
//
//	t, err := reqmtls.NewTransport(reqmtls.ClientConfig{
//		Flags:    reqmtls.RequestMTLSFlags,
//		CertFile: "bot.crt", KeyFile: "bot.key",
//	})
//	client := &http.Client{Transport: t}
//
// A Dialer gives one connection at a time, with what its handshake did
// (Handshake), for tools that report on it.
package reqmtls
