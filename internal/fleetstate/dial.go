package fleetstate

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
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
			c = &redisConn{Conn: c, s: s, fresh: freshRead}
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
		return tc, nil
	}
}

// freshRead is how long after it last read an answer a connection is
// taken as open without looking (go-redis's check before each use): see
// checkedConn.
const freshRead = time.Millisecond

// epoch is the start of the monotonic clock redisConn reads.
var epoch = time.Now()

// redisConn is a TCP connection to Redis read and written by its Socket.
type redisConn struct {
	net.Conn
	s *rawio.Socket
	// read is when a Read last returned bytes (time since epoch); fresh
	// is freshRead (tests change it).
	read  atomic.Int64
	fresh time.Duration
}

func (c *redisConn) Read(p []byte) (int, error) {
	n, err := c.s.Read(p)
	if n > 0 {
		c.read.Store(int64(time.Since(epoch)))
	}
	return n, err
}

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
	return checkedConn{RawConn: rc, c: c}, nil
}

// checkedConn is a RawConn whose Read answers go-redis's check without the
// callback's read where it can. A connection that read an answer within
// the last freshRead is taken as open without a look: Redis closes a
// connection that sat idle (its timeout), and a close from elsewhere
// (CLIENT KILL, a restart) may come just after any look, so looking that
// soon after an answer would rarely find a close and costs a system call
// on every call made back to back. Otherwise it peeks at the socket with a
// raw call (rawio.Socket.Idle): open with nothing to read, the callback, a
// read that would only find the same, is not made; otherwise it is.
type checkedConn struct {
	syscall.RawConn
	c *redisConn
}

func (c checkedConn) Read(f func(fd uintptr) bool) error {
	if time.Since(epoch)-time.Duration(c.c.read.Load()) < c.c.fresh || c.c.s.Idle() {
		return nil
	}
	return c.RawConn.Read(f)
}
