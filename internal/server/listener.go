package server

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/req-mtls/req-mtls/internal/clienthello"
)

// handshakeListener completes TLS handshakes before net/http sees a
// connection, each in its own goroutine and under its own deadline, so that
// a slow client never holds up others, the handshake timeout is exact, and
// every failed handshake is logged once with what the ClientHello said.
type handshakeListener struct {
	inner   net.Listener
	config  *tls.Config
	timeout time.Duration
	log     *slog.Logger

	conns     chan net.Conn
	errc      chan error
	done      chan struct{}
	closeOnce sync.Once
}

func newHandshakeListener(inner net.Listener, config *tls.Config, timeout time.Duration, log *slog.Logger) *handshakeListener {
	l := &handshakeListener{
		inner: inner, config: config, timeout: timeout, log: log,
		conns: make(chan net.Conn), errc: make(chan error, 1), done: make(chan struct{}),
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
				l.log.Warn("accept failed; retrying", "err", err, "in", backoff)
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
		go l.handshake(c)
	}
}

func (l *handshakeListener) handshake(c net.Conn) {
	tc := tls.Server(c, l.config)
	// The deadline bounds every read and write of the handshake, the
	// ClientHello inspection's included; no context timer is needed.
	c.SetDeadline(time.Now().Add(l.timeout))
	if err := tc.Handshake(); err != nil {
		attrs := []any{"remote", c.RemoteAddr().String(), "err", err}
		if hc, ok := c.(*clienthello.Conn); ok && hc.HelloSeen() {
			attrs = append(attrs, "tls_flags", hc.Flags().String())
		}
		l.log.Warn("tls handshake failed", attrs...)
		lingerClose(c)
		return
	}
	c.SetDeadline(time.Time{})
	select {
	case l.conns <- tc:
	case <-l.done:
		tc.Close()
	}
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

func (l *handshakeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.inner.Close()
}

func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }

// lingerClose closes c after a failed handshake so that the client reads the
// alert crypto/tls sent: closing a socket with unread input makes the kernel
// send a reset, which can destroy the alert before the client reads it (a
// TLS 1.3 client has usually sent its first request by the time it learns
// its certificate was refused). So: send FIN, read and discard for a moment,
// then close.
func lingerClose(c net.Conn) {
	defer c.Close()
	inner := c
	if hc, ok := c.(*clienthello.Conn); ok {
		inner = hc.Conn
	}
	tcp, ok := inner.(*net.TCPConn)
	if !ok {
		return
	}
	if tcp.CloseWrite() != nil {
		return
	}
	tcp.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(tcp, 1<<16))
}
