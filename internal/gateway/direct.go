package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"

	"github.com/req-mtls/req-mtls/internal/rawio"
)

// direct sends the requests it can to a plain-HTTP origin on the calling
// goroutine: it writes the request on a kept-alive HTTP/1.1 connection in
// one write, reads the response header there, and hands back a body that
// reads from the connection and gives it back to the pool at its end.
// net/http's Transport hands every request to two goroutines of its
// connection (a writer and a reader) and back; a proxy that answers most
// requests with a small body spends a good part of its time in those
// handoffs. Requests with a body, protocol upgrades (WebSockets) and https
// origins go to the Transport, which streams both ways at once.
//
// Both share one cap on the connections open to the origin (slots).
type direct struct {
	dial     func(ctx context.Context) (net.Conn, error)
	fallback http.RoundTripper
	slots    *slots
	header   time.Duration // ResponseHeaderTimeout
	idleTime time.Duration // an idle connection is closed after it
	// closeOther closes the fallback's idle connections, for a request
	// that waits for a slot.
	closeOther func()

	mu   sync.Mutex
	idle []*pconn // most recently used last
}

// pconn is one kept-alive connection to the origin.
type pconn struct {
	net.Conn
	lim  headerLimit // under br
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // when it went idle
	// sock reads and writes a TCP connection without a notice to the
	// scheduler (rawio), and tells whether it is still open (alive);
	// raw tells that for any other socket.
	sock *rawio.Socket
	raw  syscall.RawConn
	once sync.Once
}

func newPconn(c net.Conn) *pconn {
	pc := &pconn{Conn: c, sock: rawio.New(c)}
	var rw io.ReadWriter = c
	if pc.sock != nil {
		rw = pc.sock
	}
	pc.lim = headerLimit{r: rw, left: math.MaxInt64}
	pc.br, pc.bw = bufio.NewReaderSize(&pc.lim, 4096), bufio.NewWriterSize(rw, 4096)
	if sc, ok := c.(syscall.Conn); ok && pc.sock == nil {
		// For alive, once: it is a new value each time.
		pc.raw, _ = sc.SyscallConn()
	}
	return pc
}

// maxHeaderBytes bounds an origin's response header, the informational
// answers before it included unless they went to the client: the limit
// of the Transport (MaxResponseHeaderBytes), which takes the other
// requests.
const maxHeaderBytes = 10 << 20

// headerLimit counts what a connection reads against what is left of
// the limit on the header being read (as the Transport does): every byte
// read, the body's first bytes that came with the header included.
// It keeps the socket's last error, which a header parser may turn into
// another (a line cut by the header timeout is a malformed one).
type headerLimit struct {
	r    io.Reader
	left int64
	err  error
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if err != nil {
		l.err = err
	}
	return n, err
}

var errHeaderTooLarge = fmt.Errorf("origin response header exceeded %d bytes", maxHeaderBytes)

// maxIdle is how many idle connections the pool keeps (as the Transport's
// MaxIdleConnsPerHost here): room for a few hundred requests at a time
// (h2load's ten connections of ten streams are a hundred). With fewer, the
// connections past it were closed as each burst ended and dialed again by
// the next: 7 % of the server's CPU under that load went to dialing.
const maxIdle = 256

// dialFunc is http.Transport's DialContext.
type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// newDirect returns the direct way to the origin that dial reaches, under
// the cap s. fallback makes the way for the rest, given the dial function
// it must use: one that takes its slots from s too.
func newDirect(dial func(ctx context.Context) (net.Conn, error), s *slots, header, idle time.Duration, fallback func(dialFunc) http.RoundTripper) *direct {
	d := &direct{dial: dial, slots: s, header: header, idleTime: idle, closeOther: func() {}}
	d.fallback = fallback(d.dialCounted)
	if tr, ok := d.fallback.(interface{ CloseIdleConnections() }); ok {
		d.closeOther = tr.CloseIdleConnections
	}
	return d
}

// dialCounted dials the origin for the fallback: a slot first (closing an
// idle direct connection for one if none is free), given back when the
// connection closes.
func (d *direct) dialCounted(ctx context.Context, _, _ string) (net.Conn, error) {
	if err := d.slots.acquire(ctx, d.closeOldestIdle); err != nil {
		return nil, err
	}
	c, err := d.dial(ctx)
	if err != nil {
		d.slots.release()
		return nil, err
	}
	return &countedConn{Conn: rawio.Wrap(c), s: d.slots}, nil
}

// takes reports whether r goes the direct way: plain HTTP, no body, no
// protocol switch.
func takes(r *http.Request) bool {
	return r.URL.Scheme == "http" && (r.Body == nil || r.Body == http.NoBody) &&
		r.ContentLength == 0 && r.Header.Get("Upgrade") == "" && len(r.TransferEncoding) == 0
}

// idempotent reports whether a request can be sent again on another
// connection after a kept-alive one failed before any answer (RFC 9110,
// Section 9.2.2).
func idempotent(r *http.Request) bool {
	switch r.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

func (d *direct) RoundTrip(r *http.Request) (*http.Response, error) {
	var got1xx func(int, textproto.MIMEHeader) error
	if trace := httptrace.ContextClientTrace(r.Context()); trace != nil {
		got1xx = trace.Got1xxResponse
	}
	return d.roundTrip(r, got1xx)
}

// roundTrip is RoundTrip, handing informational answers (103 Early Hints)
// to got1xx.
func (d *direct) roundTrip(r *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	if !takes(r) {
		return d.fallback.RoundTrip(r)
	}
	for {
		pc, reused, err := d.get(r.Context())
		if err != nil {
			return nil, err
		}
		resp, err := d.send(pc, r, got1xx)
		if err == nil {
			return resp, nil
		}
		pc.close(d.slots)
		// A kept-alive connection the origin closed while it was idle
		// fails before any answer: the request never reached the
		// origin, and goes again on a new connection.
		if !reused || !idempotent(r) || r.Context().Err() != nil || !errors.Is(err, errNoAnswer) {
			return nil, unwrapNoAnswer(err)
		}
	}
}

// errNoAnswer marks a connection that the origin had closed before the
// request: it failed in writing, or before the first byte of an answer,
// with an end of stream or a reset (never a timeout: a slow origin may
// have the request).
var errNoAnswer = errors.New("origin closed the connection before answering")

type noAnswer struct{ err error }

func (e noAnswer) Error() string   { return e.err.Error() }
func (e noAnswer) Unwrap() []error { return []error{e.err, errNoAnswer} }

func unwrapNoAnswer(err error) error {
	var n noAnswer
	if errors.As(err, &n) {
		return n.err
	}
	return err
}

// isTimeout reports whether err is a timeout (a deadline that passed).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connGone reports whether err says the origin closed the connection.
func connGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED)
}

// send writes r on pc and reads the response header.
func (d *direct) send(pc *pconn, r *http.Request, got1xx func(int, textproto.MIMEHeader) error) (*http.Response, error) {
	ctx := r.Context()
	if d.header > 0 {
		pc.SetDeadline(time.Now().Add(d.header))
	}
	// The request's end (the client went away) ends the wait.
	stop := context.AfterFunc(ctx, func() { pc.SetDeadline(time.Unix(1, 0)) })
	pc.lim.left, pc.lim.err = maxHeaderBytes, nil
	err := writeRequest(pc.bw, r)
	if err == nil {
		err = pc.bw.Flush()
	}
	if err == nil {
		_, err = pc.br.Peek(1)
	}
	if err != nil && connGone(err) {
		err = noAnswer{err}
	}
	var resp *http.Response
	for err == nil {
		resp, err = http.ReadResponse(pc.br, r)
		if err != nil || resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// An informational answer (103 Early Hints) goes to the
		// client (through the proxy's trace, as from the Transport),
		// however many come: the header timeout bounds them all.
		if got1xx != nil {
			err = got1xx(resp.StatusCode, textproto.MIMEHeader(resp.Header))
			// Passed on: the client's to bound. The next header
			// has the whole limit.
			pc.lim.left = maxHeaderBytes
		}
	}
	switch {
	case err == nil:
	case pc.lim.left <= 0:
		err = errHeaderTooLarge
	case isTimeout(pc.lim.err) && !isTimeout(err):
		// The header timeout, whatever the parser made of the
		// header it cut.
		err = fmt.Errorf("awaiting the origin's response header: %w", pc.lim.err)
	}
	pc.lim.left = math.MaxInt64 // the body's length is the origin's
	if err == nil {
		pc.SetDeadline(time.Time{})
		if ctx.Err() != nil {
			// Ended before the deadline was cleared: its own
			// deadline went with it.
			err = ctx.Err()
		}
	}
	if err != nil {
		stop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		stop()
		return nil, errors.New("origin switched protocols on a request that did not ask to")
	}
	resp.Body = &directBody{body: resp.Body, ctx: ctx, pc: pc, d: d, stop: stop, reuse: !resp.Close && !r.Close, eof: resp.Body == http.NoBody}
	return resp, nil
}

// get returns an idle connection, or a new one; at the cap, it waits for
// either.
func (d *direct) get(ctx context.Context) (*pconn, bool, error) {
	for {
		if pc := d.popIdle(); pc != nil {
			return pc, true, nil
		}
		ok, wait := d.slots.tryAcquire()
		if ok {
			c, err := d.dial(ctx)
			if err != nil {
				d.slots.release()
				return nil, false, err
			}
			return newPconn(c), false, nil
		}
		d.closeOther() // each it closes gives its slot back
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// popIdle returns the idle connection used last, or nil; it closes those
// idle too long.
func (d *direct) popIdle() *pconn {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.idle) > 0 {
		pc := d.idle[len(d.idle)-1]
		d.idle = d.idle[:len(d.idle)-1]
		if now.Sub(pc.used) < d.idleTime && pc.alive() {
			return pc
		}
		pc.close(d.slots)
	}
	return nil
}

// put makes pc idle.
func (d *direct) put(pc *pconn) {
	pc.used = time.Now()
	var drop []*pconn
	d.mu.Lock()
	d.idle = append(d.idle, pc)
	// The oldest go: past the pool's size, or idle too long.
	for len(d.idle) > maxIdle || len(d.idle) > 0 && pc.used.Sub(d.idle[0].used) >= d.idleTime {
		drop = append(drop, d.idle[0])
		d.idle = d.idle[1:]
	}
	d.mu.Unlock()
	for _, old := range drop {
		old.close(d.slots)
	}
	d.slots.wake() // a request waiting at the cap can take it
}

// closeOldestIdle closes the idle connection unused the longest, for a
// request that waits for a slot; it reports whether there was one.
func (d *direct) closeOldestIdle() bool {
	d.mu.Lock()
	if len(d.idle) == 0 {
		d.mu.Unlock()
		return false
	}
	pc := d.idle[0]
	d.idle = d.idle[1:]
	d.mu.Unlock()
	pc.close(d.slots)
	return true
}

// CloseIdle closes every idle connection.
func (d *direct) CloseIdle() {
	for d.closeOldestIdle() {
	}
}

// close closes the connection and gives its slot back, once.
func (pc *pconn) close(s *slots) {
	pc.once.Do(func() {
		pc.Conn.Close()
		s.release()
	})
}

// directBody is a response body read from the connection; at its end the
// connection goes back to the pool, unless the origin or the request said
// close, or the body was not read to its end.
type directBody struct {
	body  io.ReadCloser
	ctx   context.Context // the request's
	pc    *pconn
	d     *direct
	stop  func() bool
	reuse bool
	once  sync.Once
	eof   bool
}

func (b *directBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.eof = true
		b.done()
	} else if err != nil && b.ctx.Err() != nil {
		// The request ended (the client went away), which set the
		// deadline that failed the read: the request's error, as
		// from the Transport, not the origin's.
		err = b.ctx.Err()
	}
	return n, err
}

func (b *directBody) Close() error {
	if !b.eof {
		// Closed before its end: the connection goes first, so that
		// closing the body does not read the rest of it (an endless
		// stream, a body past -max-response-body).
		b.done()
	}
	err := b.body.Close()
	b.done()
	return err
}

func (b *directBody) done() {
	b.once.Do(func() {
		stopped := b.stop() // false: the request ended, and set a deadline
		if b.eof && b.reuse && stopped && b.pc.br.Buffered() == 0 {
			b.d.put(b.pc)
			return
		}
		b.pc.close(b.d.slots)
	})
}

// slots caps the connections open to the origin, over both ways of
// sending. A request that finds none free waits until one is released or
// a connection goes idle.
type slots struct {
	max  int // 0: no cap
	mu   sync.Mutex
	n    int
	wait chan struct{} // closed at the next release or wake; nil while nobody waits
}

func newSlots(max int) *slots { return &slots{max: max} }

// tryAcquire takes a slot if one is free; otherwise it returns what to
// wait on before trying again.
func (s *slots) tryAcquire() (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.max <= 0 || s.n < s.max {
		s.n++
		return true, nil
	}
	if s.wait == nil {
		s.wait = make(chan struct{})
	}
	return false, s.wait
}

// acquire takes a slot, waiting for one; evict, when it closes an idle
// connection, makes one free.
func (s *slots) acquire(ctx context.Context, evict func() bool) error {
	for {
		ok, wait := s.tryAcquire()
		if ok {
			return nil
		}
		if evict() {
			continue
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *slots) release() {
	s.mu.Lock()
	s.n--
	s.mu.Unlock()
	s.wake()
}

// wake lets every request waiting for a slot try again.
func (s *slots) wake() {
	s.mu.Lock()
	if s.wait != nil {
		close(s.wait)
		s.wait = nil
	}
	s.mu.Unlock()
}

// countedConn gives its slot back when closed (the Transport's
// connections).
type countedConn struct {
	net.Conn
	s    *slots
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.s.release)
	return err
}
