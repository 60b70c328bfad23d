package fleetstate

import (
	"context"
	"crypto/tls"
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
		if rc, ok := c.(*redisConn); ok {
			return &tlsRedisConn{Conn: tc, raw: rc}, nil
		}
		return tc, nil
	}
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

// tlsRedisConn is a TLS connection over a redisConn. A *tls.Conn has no
// SyscallConn, and without one go-redis checks nothing before using a
// pooled connection: one Redis closed would fail the next call. Its
// SyscallConn is the socket's under TLS, where a close shows as under a
// plain connection, and anything Redis sent unasked (a TLS record: an
// alert) as a byte to read: the check's read takes that byte from under
// TLS, and go-redis then closes the connection, as for any such byte.
type tlsRedisConn struct {
	*tls.Conn
	raw *redisConn
}

func (c *tlsRedisConn) SyscallConn() (syscall.RawConn, error) { return c.raw.SyscallConn() }
