package server

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// serveHTTP2 makes hs serve HTTP/2 with golang.org/x/net/http2 on a
// headerConn: the same server as net/http's own (its configuration comes
// from hs, graceful shutdown included), writing most responses in one
// system call instead of two.
func serveHTTP2(hs *http.Server) error {
	//lint:ignore SA1019 net/http's own HTTP/2 server takes only a *tls.Conn (TLSNextProto); x/net's serves any net.Conn, the headerConn around it.
	h2 := &http2.Server{}
	//lint:ignore SA1019 see above
	if err := http2.ConfigureServer(hs, h2); err != nil {
		return err
	}
	hs.TLSNextProto[http2.NextProtoTLS] = func(hs *http.Server, c *tls.Conn, h http.Handler) {
		// net/http hands down the connection's context (ConnContext's)
		// through the handler, as it does to its own HTTP/2 server.
		var ctx context.Context
		if bc, ok := h.(interface{ BaseContext() context.Context }); ok {
			ctx = bc.BaseContext()
		}
		hc := &headerConn{Conn: c}
		defer hc.stop()
		//lint:ignore SA1019 see ConfigureServer above
		h2.ServeConn(hc, &http2.ServeConnOpts{Context: ctx, Handler: h, BaseConfig: hs})
	}
	return nil
}

// closeWriteTimeout bounds the write of a held frame at Close (as
// crypto/tls bounds its close_notify).
const closeWriteTimeout = time.Second

// headerHold is how long a headerConn holds a response's HEADERS frame for
// the DATA that follows it.
const headerHold = time.Millisecond

// maxHeld bounds what a headerConn holds and what it copies to join a
// held frame to the next write (a larger write goes after the held frame in
// a write of its own).
const maxHeld = 16 << 10

// joinPool holds the buffers in which a held frame and the write after it
// are joined.
var joinPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// heldKept is the most a headerConn keeps of its held buffer's capacity
// between responses (response headers are mostly far smaller).
const heldKept = 1 << 10

// headerConn is the TLS connection an HTTP/2 server writes to. The server
// flushes a response's HEADERS frame on its own, waits for its handler to
// hand over the body, then flushes the DATA: two TLS records and two system
// calls for a response that fits in one, each of them a good part of a
// proxied request's cost. A headerConn holds a flush that is only HEADERS
// frames opening responses (no END_STREAM: a body follows) and writes it
// with the next flush of anything else; when none comes within
// headerHold (a stream whose body is not ready, a 103 Early Hints), it
// writes it alone. The bytes and their order are the server's.
type headerConn struct {
	*tls.Conn

	mu    sync.Mutex
	held  []byte // HEADERS frames, or nothing
	timer *time.Timer
	err   error // the held frame's write failed: every later write fails
}

func (c *headerConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if len(c.held)+len(p) <= maxHeld && opensResponses(p) {
		// Held, with those held before it (another stream's header
		// came between a header and its body).
		if len(c.held) == 0 {
			if c.timer == nil {
				c.timer = time.AfterFunc(headerHold, c.release)
			} else {
				c.timer.Reset(headerHold)
			}
		}
		c.held = append(c.held, p...)
		return len(p), nil
	}
	if len(c.held) == 0 {
		return c.Conn.Write(p)
	}
	c.timer.Stop()
	held := c.held
	c.held = c.held[:0]
	if len(p) > maxHeld {
		defer c.trimHeld()
		if _, err := c.Conn.Write(held); err != nil {
			c.err = err
			return 0, err
		}
		return c.Conn.Write(p)
	}
	// Joined in a pooled buffer: a connection keeps nothing of the
	// size of its answers while it is idle.
	bp := joinPool.Get().(*[]byte)
	*bp = append(append((*bp)[:0], held...), p...)
	n, err := c.Conn.Write(*bp)
	joinPool.Put(bp)
	c.trimHeld()
	if err != nil {
		c.err = err
		return max(n-len(held), 0), err
	}
	return len(p), nil
}

// release writes the held frame: no other write came in time.
func (c *headerConn) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.held) > 0 && c.err == nil {
		_, c.err = c.Conn.Write(c.held)
	}
	c.held = c.held[:0]
	c.trimHeld()
}

// trimHeld lets go of an unusually large held buffer, once written.
func (c *headerConn) trimHeld() {
	if cap(c.held) > heldKept {
		c.held = nil
	}
}

// Close writes a held frame first, unless a write is under way (one stuck
// on a peer that does not read must not keep the connection open), within
// closeWriteTimeout.
func (c *headerConn) Close() error {
	if c.mu.TryLock() {
		if len(c.held) > 0 && c.err == nil {
			c.Conn.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
			c.Conn.Write(c.held)
		}
		c.held = c.held[:0]
		c.mu.Unlock()
	}
	return c.Conn.Close()
}

// stop ends the timer when the server is done with the connection.
func (c *headerConn) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
}

// HTTP/2 frame header fields (RFC 9113, Section 4.1).
const (
	frameHeaderLen  = 9
	frameHeaders    = 0x1
	flagEndStream   = 0x1
	flagEndHeaders  = 0x4
	streamIDMask    = 0x7fffffff
	frameTypeOffset = 3
)

// opensResponses reports whether p is one or more whole HEADERS frames,
// each complete (END_HEADERS), on a stream, and leaving it open (no
// END_STREAM): response headers whose bodies, or final headers, follow.
func opensResponses(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	for len(p) > 0 {
		if len(p) < frameHeaderLen {
			return false
		}
		end := frameHeaderLen + (int(p[0])<<16 | int(p[1])<<8 | int(p[2]))
		flags := p[4]
		if end > len(p) || p[frameTypeOffset] != frameHeaders || flags&flagEndHeaders == 0 || flags&flagEndStream != 0 ||
			binary.BigEndian.Uint32(p[5:9])&streamIDMask == 0 {
			return false
		}
		p = p[end:]
	}
	return true
}
