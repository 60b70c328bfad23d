package server

import (
	"crypto/x509"
	"net"
	"sync"
	"sync/atomic"

	"github.com/req-mtls/req-mtls/internal/clienthello"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// A Decision is what the server decided about a client in one handshake.
// It is recorded once, where it is made (tls.Config.VerifyConnection), and
// everything that reports on the connection reads it: /debug, logs. It is
// never re-derived later from the policy or the roots in force then.
type Decision struct {
	Policy    Policy
	Flagged   bool // the ClientHello set flag 80
	Requested bool // a CertificateRequest was sent
	Resumed   bool
	// Chain is the client's certificate chain, leaf first; empty when
	// none was sent (or the resumed session had none).
	Chain []*x509.Certificate
	// Store is the trust store the certificate was checked against.
	Store StoreKind
	// Err is why the certificate did not validate; nil when it did, or
	// when there was none.
	Err error
}

// Validated reports whether a certificate came and validated.
func (d *Decision) Validated() bool { return len(d.Chain) > 0 && d.Err == nil }

// conn is the server's side of one accepted connection, under crypto/tls:
// the ClientHello inspection, and the decision made in its handshake.
type conn struct {
	*clienthello.Conn
	srv      *Server
	decision atomic.Pointer[Decision]
	close    sync.Once
	closed   bool // guarded by srv.connsMu
}

func (s *Server) newConn(c net.Conn) *conn {
	return &conn{Conn: clienthello.NewConn(c), srv: s}
}

// flagged reports whether the client set the request-mTLS flag.
func (c *conn) flagged() bool { return c.Flags().Has(tlsflags.RequestMTLS) }

// Decision returns the decision of the handshake, or nil before it.
func (c *conn) Decision() *Decision { return c.decision.Load() }

// Close closes the connection once and forgets it.
func (c *conn) Close() error {
	err := net.ErrClosed
	c.close.Do(func() {
		c.srv.connsMu.Lock()
		c.closed = true
		delete(c.srv.conns, c)
		c.srv.connsMu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

// track remembers a connection that holds a client certificate, so that a
// change of trust stores can be applied to it (Server.recheck).
func (c *conn) track() {
	c.srv.connsMu.Lock()
	defer c.srv.connsMu.Unlock()
	if !c.closed {
		c.srv.conns[c] = struct{}{}
	}
}
