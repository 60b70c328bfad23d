package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// serveHTTP2 makes hs serve HTTP/2 with golang.org/x/net/http2 on a
// headerConn: the same server as net/http's own (its configuration comes
// from hs, graceful shutdown included), writing most responses in one
// system call instead of two.
func serveHTTP2(hs *http.Server, hold time.Duration, frameSize uint32) error {
	//lint:ignore SA1019 net/http's own HTTP/2 server takes only a *tls.Conn (TLSNextProto); x/net's serves any net.Conn, the headerConn around it.
	// frameSize 0 is x/net's read size, 1 MiB, announced as
	// SETTINGS_MAX_FRAME_SIZE: RFC 9113's 16 KiB would make a frame over
	// it the FRAME_SIZE_ERROR h2spec 4.2 case 3 wants, but costs uploads
	// a third more time (BenchmarkHTTP2Upload, docs/protocol.md).
	h2 := &http2.Server{MaxReadFrameSize: frameSize}
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
		hc := &headerConn{Conn: c, hold: hold}
		defer hc.stop()
		//lint:ignore SA1019 see ConfigureServer above
		h2.ServeConn(hc, &http2.ServeConnOpts{Context: ctx, Handler: &flushHandler{h: h, hc: hc}, BaseConfig: hs})
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

// A flushHandler tells its connection's headerConn when a handler waits
// for what it sends: a flush (http.Flusher, http.ResponseController), an
// informational response (103 Early Hints), the first read of a request
// body (which sends 100 Continue to a client that asked for it).
type flushHandler struct {
	h  http.Handler
	hc *headerConn
}

func (f *flushHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 && r.Method != http.MethodConnect {
		// A body (x/net's server takes Expect: 100-continue out of the
		// header: any request with a body may be waiting for a 100; a
		// tunnel's first read may wait long, and no 100 is sent).
		r.Body = &firstRead{ReadCloser: r.Body, hc: f.hc}
	}
	f.h.ServeHTTP(&flushWriter{ResponseWriter: w, hc: f.hc}, r)
}

// A flushWriter is a response's http.ResponseWriter, telling the
// headerConn of what the handler waits for.
type flushWriter struct {
	http.ResponseWriter
	hc *headerConn
}

func (w *flushWriter) WriteHeader(code int) {
	if code < http.StatusOK {
		w.hc.hurry()
		defer w.hc.hurried()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *flushWriter) WriteString(s string) (int, error) {
	return io.WriteString(w.ResponseWriter, s)
}

func (w *flushWriter) Flush() { w.FlushError() }

func (w *flushWriter) FlushError() error {
	w.hc.hurry()
	defer w.hc.hurried()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *flushWriter) Push(target string, opts *http.PushOptions) error {
	if p, ok := w.ResponseWriter.(http.Pusher); ok {
		return p.Push(target, opts)
	}
	return http.ErrNotSupported
}

// Unwrap is for http.ResponseController (deadlines, full duplex).
func (w *flushWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// firstRead is a request body whose first read may send 100 Continue.
type firstRead struct {
	io.ReadCloser
	hc   *headerConn
	read bool
}

func (b *firstRead) Read(p []byte) (int, error) {
	if !b.read {
		// The 100 Continue is queued by this read, which then waits
		// for the body the client sends once it has it.
		b.read = true
		b.hc.hurry()
		defer b.hc.hurried()
	}
	return b.ReadCloser.Read(p)
}

// headerConn is the TLS connection an HTTP/2 server writes to. The server
// flushes a response's HEADERS frame on its own, waits for its handler to
// hand over the body, then flushes the DATA: two TLS records and two system
// calls for a response that fits in one, each of them a good part of a
// proxied request's cost. A headerConn holds a flush that is only HEADERS
// frames opening responses (no END_STREAM: a body follows) and writes it
// with the next flush of anything else; when none comes within
// headerHold (a body slower than the handler's return), it writes it
// alone. The bytes and their order are the server's.
//
// Nothing is held while a handler waits for what it sent to reach the
// client (a flush, an informational response, a 100 Continue): between a
// handler's hurry and the first write after its hurried, which carries
// what it sent (the server has it buffered by then), every write goes at
// once. A hold is for headers nothing waits for, which the handler's body
// follows within microseconds.
type headerConn struct {
	*tls.Conn

	urgent   atomic.Int32 // handlers between hurry and the write after hurried
	clearing atomic.Int32 // of them, those past hurried

	hold time.Duration // headerHold

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
	// This write carries what the handlers past hurried sent.
	urgent := c.urgent.Load() > 0
	c.urgent.Add(-c.clearing.Swap(0))
	if !urgent && len(c.held)+len(p) <= maxHeld && opensResponses(p) {
		// Held, with those held before it (another stream's header
		// came between a header and its body).
		if len(c.held) == 0 {
			if c.timer == nil {
				c.timer = time.AfterFunc(cmp.Or(c.hold, headerHold), c.release)
			} else {
				c.timer.Reset(cmp.Or(c.hold, headerHold))
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

// hurry tells c that a handler is about to send something it waits for:
// nothing is held from now until the write after hurried. A frame held
// already goes out with that write.
func (c *headerConn) hurry() { c.urgent.Add(1) }

// hurried tells c that what the handler sent since hurry is in the
// server's buffer (x/net's server answers a handler's write once the frame
// is in it, before it writes the buffer to c): the next write carries it.
func (c *headerConn) hurried() { c.clearing.Add(1) }

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
