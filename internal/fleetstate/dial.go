package fleetstate

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/req-mtls/req-mtls/internal/rawio"
)

// dialer connects to a Redis server as go-redis's own dialer does (TCP
// keep-alive every 5 minutes; TLS with tlsConf when it is set), but with
// the socket's reads and writes made by package rawio. A request waits on
// Redis in the middle of its handling: with the net.Conn's calls, a write
// to a Redis on loopback (which runs Redis's side of TCP too) often
// outlasts a tick of Go's scheduler monitor, which then hands the
// gateway's processor to another thread; on a server on one CPU, each
// round trip cost two context switches more and kept the monitor waking
// every 20 µs (see rawio). A Unix socket, or a system without raw calls,
// gets the net.Conn.
func dialer(timeout time.Duration, tlsConf *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if timeout <= 0 {
		timeout = 5 * time.Second // go-redis's default
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Minute}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if s := rawio.New(c); s != nil {
			c = &redisConn{Conn: c, s: s}
		}
		if tlsConf == nil {
			return c, nil
		}
		conf := tlsConf
		if conf.ServerName == "" {
			// As tls.Dial: the name the address gives.
			conf = conf.Clone()
			conf.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(c, conf)
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			c.Close()
			return nil, err
		}
		if err := settle(hctx, tc); err != nil {
			tc.Close()
			return nil, err
		}
		if sc, ok := c.(syscall.Conn); ok {
			return &tlsRedisConn{Conn: tc, raw: sc}, nil
		}
		return tc, nil
	}
}

// settle makes one round trip on a new TLS connection (a PING, answered
// even before AUTH: PONG or an error), so that the records Redis sends
// after the handshake (TLS 1.3 session tickets) are read and not left on
// the socket, where go-redis's check before use of a connection dialled
// ahead (min_idle_conns) would take them for an answer out of step and
// close it.
func settle(ctx context.Context, tc *tls.Conn) error {
	if d, ok := ctx.Deadline(); ok {
		tc.SetDeadline(d)
		defer tc.SetDeadline(time.Time{})
	}
	if _, err := tc.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	var line []byte
	b := make([]byte, 64)
	for !bytes.HasSuffix(line, []byte("\r\n")) {
		n, err := tc.Read(b)
		if err != nil {
			return fmt.Errorf("redis over TLS: no answer to PING: %w", err)
		}
		if line = append(line, b[:n]...); len(line) > 1024 {
			return fmt.Errorf("redis over TLS: an answer to PING of %d bytes", len(line))
		}
	}
	return nil
}

// redisConn is a TCP connection to Redis read and written by its Socket.
type redisConn struct {
	net.Conn
	s *rawio.Socket
}

func (c *redisConn) Read(p []byte) (int, error)  { return c.s.Read(p) }
func (c *redisConn) Write(p []byte) (int, error) { return c.s.Write(p) }

// SyscallConn is for go-redis's check of a pooled connection before each
// use: it reads a byte through RawConn.Read, to find a connection Redis
// closed (EOF) or one out of step (a byte to read). checkedConn answers
// for an open connection with nothing to read without that read.
func (c *redisConn) SyscallConn() (syscall.RawConn, error) {
	rc, err := c.Conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	return checkedConn{RawConn: rc, s: c.s}, nil
}

// checkedConn is a RawConn whose Read first peeks at the socket with a raw
// call (rawio.Socket.Idle): open with nothing to read, the callback, a
// read that would only find the same, is not made; otherwise it is.
type checkedConn struct {
	syscall.RawConn
	s *rawio.Socket
}

func (c checkedConn) Read(f func(fd uintptr) bool) error {
	if c.s.Idle() {
		return nil
	}
	return c.RawConn.Read(f)
}

// tlsRedisConn is a TLS connection to Redis. A *tls.Conn has no
// SyscallConn, and without one go-redis checks nothing before using a
// pooled connection: one Redis closed would fail the next call. Its
// SyscallConn is the socket's under TLS, where a close shows as under a
// plain connection, and anything Redis sent unasked (a TLS record: an
// alert) as a byte to read: the check's read takes that byte from under
// TLS, and go-redis then closes the connection, as for any such byte.
type tlsRedisConn struct {
	*tls.Conn
	raw syscall.Conn // a redisConn, or the net.Conn without raw calls
}

func (c *tlsRedisConn) SyscallConn() (syscall.RawConn, error) { return c.raw.SyscallConn() }
