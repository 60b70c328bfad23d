package auth

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

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
	// Verified is the path that validated the leaf, leaf first and root
	// last, built from the store's roots and the certificates the client
	// sent (which may hold others); nil unless the certificate validated.
	Verified []*x509.Certificate
	// Store is the trust store the certificate was checked against:
	// StoreAgent when it names a trusted agent.
	Store StoreKind
	// Agent is the URL of the trusted agent whose directory vouched for
	// the certificate's key (Store is StoreAgent); empty otherwise.
	Agent string
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
	closed   atomic.Bool
	// tracker is the Authenticator that decided the handshake and tracks
	// the connection (track): the one whose TLSConfig served it, which
	// may not be a, the one whose listener accepted it (a server of
	// several sites has one per site).
	tracker atomic.Pointer[Authenticator]
	// handshakeOK is set when the handshake passed VerifyConnection.
	handshakeOK atomic.Bool
	onClose     func()
	hsTimer     *time.Timer    // closes the connection if its handshake is not done in time (NewListener)
	alerts      *alertRewriter // set where a revoked certificate's alert is to be certificate_revoked
	memoMu      sync.Mutex
	memo        map[any]any // Memo's values
}

// WrapConn wraps an accepted connection for inspection, for servers that
// accept connections other than through NewListener.
func (a *Authenticator) WrapConn(c net.Conn) *Conn {
	return &Conn{Conn: clienthello.NewConn(c, a.helloBudget), a: a}
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

// Write writes p, with the one alert record alertRewriter rewrites.
func (c *Conn) Write(p []byte) (int, error) {
	if c.alerts != nil && len(p) > 0 {
		if q := c.alerts.rewrite(p); &q[0] != &p[0] {
			if _, err := c.Conn.Write(q); err != nil {
				return 0, err
			}
			return len(p), nil
		}
	}
	return c.Conn.Write(p)
}

// Memo returns the value remembered for key on this connection, making it
// with f the first time: for what is derived from the connection's
// decision, which never changes, and need not be derived per request. f
// must not call Memo on the same connection.
func (c *Conn) Memo(key any, f func() any) any {
	c.memoMu.Lock()
	defer c.memoMu.Unlock()
	if v, ok := c.memo[key]; ok {
		return v
	}
	if c.memo == nil {
		c.memo = map[any]any{}
	}
	v := f()
	c.memo[key] = v
	return v
}

// Decision returns the decision of the handshake, or nil before it.
func (c *Conn) Decision() *Decision { return c.decision.Load() }

// Close closes the connection once and forgets it.
//
// A connection whose TLS handshake did not complete is closed gently, so
// that the client reads the alert crypto/tls sent: closing a socket with
// unread input makes the kernel send a reset, which can destroy the alert
// before the client reads it (a TLS 1.3 client has usually sent its first
// request by the time it learns its certificate was refused). So Close
// sends FIN at once, then reads and discards for up to a second in the
// background before it closes the socket.
func (c *Conn) Close() error {
	if c.HelloSeen() && !c.handshakeOK.Load() {
		return c.Linger()
	}
	return c.CloseNow()
}

// CloseNow closes the connection at once.
func (c *Conn) CloseNow() error {
	err := net.ErrClosed
	c.close.Do(func() {
		c.forget()
		err = c.Conn.Close()
	})
	return err
}

// Linger closes the connection gently (see Close), whatever the state of
// its handshake: for an answer written to a client that may still be
// sending.
func (c *Conn) Linger() error {
	err := net.ErrClosed
	c.close.Do(func() {
		c.forget()
		tcp, ok := c.Conn.Conn.(*net.TCPConn)
		if pc, isProxied := c.Conn.Conn.(interface{ TCPConn() (*net.TCPConn, bool) }); isProxied {
			tcp, ok = pc.TCPConn() // under a PROXY protocol header
		}
		if !ok || tcp.CloseWrite() != nil {
			err = c.Conn.Close()
			return
		}
		err = nil
		go func() {
			tcp.SetReadDeadline(time.Now().Add(time.Second))
			io.Copy(io.Discard, io.LimitReader(tcp, 1<<16))
			tcp.Close()
		}()
	})
	return err
}

func (c *Conn) forget() {
	c.Conn.Done()
	if c.hsTimer != nil {
		c.hsTimer.Stop()
	}
	c.closed.Store(true)
	if t := c.tracker.Load(); t != nil {
		t.connsMu.Lock()
		delete(t.conns, c)
		t.connsMu.Unlock()
	}
	if c.onClose != nil {
		c.onClose()
	}
}

// OnClose sets a function called once when the connection is closed. Call
// it before the connection is in use.
func (c *Conn) OnClose(f func()) { c.onClose = f }

// track remembers a connection that holds a client certificate in a, the
// Authenticator that decided its handshake, so that a change of a's trust
// stores can be applied to it (Authenticator.recheck). (The tracker is
// published before closed is read, and forget sets closed before it reads
// the tracker: one of the two sees the other, so a connection closed
// meanwhile is never left in a map.)
func (c *Conn) track(a *Authenticator) {
	a.connsMu.Lock()
	defer a.connsMu.Unlock()
	c.tracker.Store(a)
	if !c.closed.Load() {
		a.conns[c] = struct{}{}
	}
}
