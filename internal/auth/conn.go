package auth

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"sync/atomic"

	"github.com/req-mtls/req-mtls/internal/clienthello"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// A Decision is what the server decided about a client in one handshake.
// It is recorded once, where it is made (tls.Config.VerifyConnection), and
// everything that reports on the connection reads it: /debug, logs,
// forwarded headers. It is never re-derived later from the policy or the
// roots in force then. It is not modified once recorded.
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

// A Conn is the server's side of one accepted connection, under crypto/tls:
// the ClientHello inspection, and the decision made in its handshake.
type Conn struct {
	*clienthello.Conn
	a        *Authenticator
	decision atomic.Pointer[Decision]
	close    sync.Once
	closed   bool // guarded by a.connsMu
}

// WrapConn wraps an accepted connection for inspection, for servers that
// accept connections other than through NewListener.
func (a *Authenticator) WrapConn(c net.Conn) *Conn {
	return &Conn{Conn: clienthello.NewConn(c), a: a}
}

// ConnOf returns the Conn under c: c itself, or the connection under a
// *tls.Conn. It returns nil for other connections.
func ConnOf(c net.Conn) *Conn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	ac, _ := c.(*Conn)
	return ac
}

// Flagged reports whether the client set the request-mTLS flag.
func (c *Conn) Flagged() bool { return c.Flags().Has(tlsflags.RequestMTLS) }

// Decision returns the decision of the handshake, or nil before it.
func (c *Conn) Decision() *Decision { return c.decision.Load() }

// Close closes the connection once and forgets it.
func (c *Conn) Close() error {
	err := net.ErrClosed
	c.close.Do(func() {
		c.a.connsMu.Lock()
		c.closed = true
		delete(c.a.conns, c)
		c.a.connsMu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

// track remembers a connection that holds a client certificate, so that a
// change of trust stores can be applied to it (Authenticator.recheck).
func (c *Conn) track() {
	c.a.connsMu.Lock()
	defer c.a.connsMu.Unlock()
	if !c.closed {
		c.a.conns[c] = struct{}{}
	}
}
