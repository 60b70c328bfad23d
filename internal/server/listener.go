package server

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/req-mtls/req-mtls/internal/auth"
)

// handshakeListener completes TLS handshakes before net/http sees a
// connection, each in its own goroutine and under its own deadline, so that
// a slow client never holds up others, the handshake timeout is exact, and
// every failed handshake is logged once with what the ClientHello said.
type handshakeListener struct {
	inner   net.Listener
	srv     *Server
	timeout time.Duration

	conns     chan net.Conn
	errc      chan error
	done      chan struct{}
	closeOnce sync.Once

	mu         sync.Mutex
	handshakes map[*auth.Conn]struct{} // connections still in their handshake
	wg         sync.WaitGroup          // handshake goroutines
}

func newHandshakeListener(inner net.Listener, s *Server, timeout time.Duration) *handshakeListener {
	l := &handshakeListener{
		inner: inner, srv: s, timeout: timeout,
		conns: make(chan net.Conn), errc: make(chan error, 1), done: make(chan struct{}),
		handshakes: map[*auth.Conn]struct{}{},
	}
	go l.acceptLoop()
	return l
}

func (l *handshakeListener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors and the like: wait, as
				// net/http does, instead of spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.srv.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-l.done:
					return
				}
			}
			l.errc <- err
			return
		}
		backoff = 0
		if l.srv.inFlight.Load() >= int64(l.srv.cfg.MaxHandshakes) {
			// As many handshakes as allowed are in progress: refuse
			// at once rather than hold memory for one more.
			l.srv.metrics.HandshakeRefused()
			if ok, held := l.srv.refusedLimit.allow(time.Now()); ok {
				l.srv.log.Warn("connection refused: too many handshakes in progress", "remote", c.RemoteAddr().String(),
					"max_handshakes", l.srv.cfg.MaxHandshakes, "suppressed_before", held)
			}
			c.Close()
			continue
		}
		sc := l.srv.auth.WrapConn(c)
		l.srv.metrics.ConnOpened()
		sc.OnClose(l.srv.metrics.ConnClosed)
		if !l.add(sc) {
			sc.CloseNow()
			return
		}
		go l.handshake(sc)
	}
}

// add registers a connection in its handshake; false once closed.
func (l *handshakeListener) add(c *auth.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return false
	default:
	}
	l.handshakes[c] = struct{}{}
	l.srv.inFlight.Add(1)
	l.wg.Add(1)
	return true
}

func (l *handshakeListener) remove(c *auth.Conn) {
	l.mu.Lock()
	delete(l.handshakes, c)
	l.mu.Unlock()
	l.srv.inFlight.Add(-1)
	l.wg.Done()
}

func (l *handshakeListener) handshake(c *auth.Conn) {
	defer l.remove(c)
	tc := tls.Server(c, l.srv.base)
	// The deadline counts from the accept and bounds every read and
	// write of the handshake, the ClientHello inspection's included.
	start := time.Now()
	c.SetDeadline(start.Add(l.timeout))
	if err := tc.Handshake(); err != nil {
		l.failed(c, err)
		return
	}
	c.SetDeadline(time.Time{})
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol == acme.ALPNProto {
		// An ACME tls-alpn-01 validation: the handshake was all of it.
		l.srv.log.Info("ACME tls-alpn-01 validation connection answered", "remote", c.RemoteAddr().String(), "sni", cs.ServerName)
		tc.Close()
		return
	}
	l.srv.metrics.Handshake(c.Flagged(), c.Decision(), tls.VersionName(cs.Version), cs.DidResume, time.Since(start))
	l.srv.logHandshake(c, cs)
	select {
	case l.conns <- tc:
	case <-l.done:
		c.CloseNow()
	}
}

// failed logs a failed handshake and closes the connection. Plain HTTP sent
// to the TLS port gets net/http's answer to it, a 400, as net/http's own TLS
// listener gives; this listener completes handshakes itself, so net/http
// never sees the record header.
func (l *handshakeListener) failed(c *auth.Conn, err error) {
	select {
	case <-l.done:
		c.CloseNow() // shutting down: no log, no linger
		return
	default:
	}
	l.srv.metrics.HandshakeFailed(err)
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		l.srv.log.Debug("plain HTTP request on the TLS port; answered 400", "remote", c.RemoteAddr().String())
		c.Linger()
		return
	}
	if errors.Is(err, io.EOF) && !c.HelloSeen() {
		// Closed before a ClientHello: a load balancer's health check,
		// a port scan. Not worth a warning.
		l.srv.log.Debug("connection closed before a ClientHello", "remote", c.RemoteAddr().String())
		c.CloseNow()
		return
	}
	// A scanner must not be able to flood the log: at most a burst of 50
	// lines and 10 a second after, with a count of the lines held back.
	if ok, held := l.srv.hsLimit.allow(time.Now()); ok {
		attrs := []any{"remote", c.RemoteAddr().String(), "err", err}
		if c.HelloSeen() {
			attrs = append(attrs, "tls_flags", c.Flags())
		}
		if held > 0 {
			attrs = append(attrs, "suppressed_before", held)
		}
		l.srv.log.Warn("tls handshake failed", attrs...)
	}
	c.Close() // gently, so that the client reads the alert (auth.Conn.Close)
}

// looksLikeHTTP reports whether a TLS record header is the start of an
// HTTP/1 request line, as net/http judges it.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH", "CONNE", "TRACE":
		return true
	}
	return false
}

func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case err := <-l.errc:
		l.errc <- err
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes every connection still in its
// handshake: at shutdown they have sent no request, and nothing would
// serve one.
func (l *handshakeListener) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		close(l.done)
		for c := range l.handshakes {
			c.CloseNow()
		}
		l.mu.Unlock()
	})
	return l.inner.Close()
}

// wait returns once every handshake goroutine has ended.
func (l *handshakeListener) wait() { l.wg.Wait() }

func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }
