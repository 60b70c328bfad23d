package clienthello

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/req-mtls/req-mtls/internal/rawio"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// MaxBuffered bounds the bytes a Conn holds for inspection: every byte read
// (record headers, fragments and anything read past them), kept for the
// replay, and the ClientHello reassembled when it spans records. A
// ClientHello that does not fit is refused with a decode_error alert. One in
// a single record (at most 16 KiB) is read in place; one that spans records is
// held twice, so the largest that fits is a little under half of
// MaxBuffered. Go's own ClientHello is about 1.5 KB, the largest browsers send
// about 2 KB.
const MaxBuffered = 64 << 10

// initialBuffer is the first read buffer's size: enough for the ClientHello
// of common clients, including post-quantum key shares, in one allocation.
const initialBuffer = 2048

const (
	recordTypeChangeCipherSpec = 20
	recordTypeAlert            = 21
	recordTypeHandshake        = 22
	recordHeaderLen            = 5
	maxPlaintext               = 1 << 14 // RFC 8446, Section 5.1

	alertLevelFatal       = 2
	alertDecodeError      = 50
	alertIllegalParameter = 47
	alertInternalError    = 80
)

// ErrBusy is returned by Read when the Conns sharing a Budget already hold
// all of it: the ClientHello is refused with an internal_error alert.
var ErrBusy = errors.New("clienthello: ClientHello refused: the server holds too many ClientHello bytes already")

// A Budget bounds the bytes that all the Conns sharing it hold in their
// record buffers while they read and replay a ClientHello: connections
// that send half a hello and stop hold their buffers until they time out,
// and many of them at once must not exhaust memory. It is safe for
// concurrent use; a nil Budget bounds nothing.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget returns a Budget of max bytes.
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Used returns the bytes held now.
func (b *Budget) Used() int64 { return b.used.Load() }

func (b *Budget) take(n int) bool {
	if b == nil {
		return true
	}
	if b.used.Add(int64(n)) > b.max {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

// ErrTooLarge is returned by Read when a ClientHello does not fit in
// MaxBuffered bytes (see there).
var ErrTooLarge = fmt.Errorf("clienthello: ClientHello refused: it needs more than %d bytes", MaxBuffered)

// A Listener wraps the connections that its inner listener accepts in a *Conn.
type Listener struct {
	net.Listener
}

// NewListener returns a Listener accepting from inner. Put it under
// tls.NewListener (or http.Server.ServeTLS) so that crypto/tls reads through
// the inspection.
func NewListener(inner net.Listener) *Listener {
	return &Listener{Listener: inner}
}

// Accept returns the next connection as a *Conn. It does no I/O of its own:
// inspection happens on the connection's first Read, under the deadlines that
// the reader sets.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c, nil), nil
}

// A Conn inspects the ClientHello that arrives on it, then replays every byte
// it read to its reader unchanged.
//
// Read inspects on first use: it reads whole TLS records until the
// ClientHello handshake message is complete. Input that is not a TLS
// handshake (plain HTTP, say) or not a well-formed ClientHello passes through
// untouched, so crypto/tls answers it as it always does. An invalid tls_flags
// extension in a hello that offers TLS 1.3 is answered by the Conn itself with
// a fatal illegal_parameter alert, and the connection is closed; crypto/tls
// never sees it.
//
// When the server answers a TLS 1.3 hello with a HelloRetryRequest (Write
// watches for it), the ClientHello that follows is inspected the same way,
// and refused with illegal_parameter when its tls_flags are invalid or are
// not those of the first hello. The first hello's flags stand: the accessors
// keep reporting them.
//
// The accessor methods report what inspection found. They are meant to be
// called once the reader has consumed the ClientHello, as in
// tls.Config.GetConfigForClient (whose ClientHelloInfo.Conn is the Conn) or
// after the handshake; before that they report nothing.
type Conn struct {
	net.Conn

	once    sync.Once
	raw     []byte // every byte read during inspection, until replayed
	pending []byte // the part of raw not yet returned by Read
	readErr error  // an error met while inspecting, returned after pending
	fatal   error  // the connection was refused; every Read returns it

	msg    []byte      // the complete ClientHello message, nil if none was seen
	seen   atomic.Bool // msg is set
	msgMem []byte      // the buffer msg keeps alive: its own, or raw's
	info   flagsInfo

	// From the first ClientHello to the server's answer (see retry.go).
	bound     int          // bytes of pending that belong to the first hello's records
	watch     atomic.Int32 // watchOff, watchServerHello or watchRetry
	scanMu    sync.Mutex   // guards scan
	scan      serverHelloScan
	retryOnce sync.Once
	retried   bool // a second ClientHello was inspected and agreed with the first

	peak int // the most bytes held at once during inspection, for tests

	budget   *Budget
	reserved atomic.Int64 // bytes of budget taken, given back by Release
	closed   atomic.Bool  // Close was called: nothing more is reserved

	// rw reads and writes after inspection: Conn, or for a TCP
	// connection its socket without a notice to the scheduler (rawio).
	rw net.Conn
}

// NewConn wraps c. Use it where connections are accepted by other means than
// a Listener. Its inspection buffers count against budget (nil for none).
func NewConn(c net.Conn, budget *Budget) *Conn {
	return &Conn{Conn: c, budget: budget, rw: rawio.Wrap(c)}
}

// reserve takes n bytes of the budget for this Conn; none once it is
// closed.
func (c *Conn) reserve(n int) bool {
	if c.closed.Load() || !c.budget.take(n) {
		return false
	}
	c.reserved.Add(int64(n))
	return true
}

// Release gives back what the Conn took of its budget: its inspection
// buffers are replayed, or the connection is closed. Safe from any
// goroutine, any number of times.
func (c *Conn) Release() {
	if n := c.reserved.Swap(0); n != 0 && c.budget != nil {
		c.budget.used.Add(-n)
	}
}

// Close closes the connection and gives back its share of the budget.
func (c *Conn) Close() error {
	c.Done()
	return c.Conn.Close()
}

// Done gives back the Conn's share of the budget for good: for a
// connection closed by other means than Close.
func (c *Conn) Done() {
	c.closed.Store(true)
	c.Release()
}

// Read reads data from the connection, inspecting the ClientHello first.
func (c *Conn) Read(p []byte) (int, error) {
	c.once.Do(c.inspect)
	if c.bound == 0 && c.watch.Load() != watchOff {
		c.afterHello()
	}
	if c.fatal != nil {
		return 0, c.fatal
	}
	if len(c.pending) > 0 {
		q := p
		if c.bound > 0 {
			q = p[:min(len(p), c.bound)]
		}
		n := copy(q, c.pending)
		c.bound -= min(n, c.bound)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending, c.raw = nil, nil
			c.Release()
		}
		return n, nil
	}
	if err := c.readErr; err != nil {
		// Deadline errors are not sticky on a net.Conn: report this one
		// once, then read afresh.
		c.readErr = nil
		return 0, err
	}
	return c.rw.Read(p)
}

// HelloSeen reports whether a well-formed ClientHello was read.
// It is safe to call from any goroutine, at any time (a Close from
// another goroutine during the handshake, say).
func (c *Conn) HelloSeen() bool { return c.seen.Load() }

// Flags returns the TLS flags the client sent, empty when it sent none, sent
// them in a hello that does not offer TLS 1.3, or no ClientHello was seen.
func (c *Conn) Flags() tlsflags.Set { return c.info.flags }

// FlagsCodepoint returns the extension codepoint that carried the flags
// (tlsflags.CodepointExperimental or tlsflags.CodepointBoringSSL), or 0.
func (c *Conn) FlagsCodepoint() uint16 { return c.info.codepoint }

// OffersTLS13 reports whether the ClientHello offered TLS 1.3.
func (c *Conn) OffersTLS13() bool { return c.info.tls13 }

// ClientHello returns the ClientHello handshake message as the client sent
// it (header included, records removed), or nil. The caller must not modify it.
func (c *Conn) ClientHello() []byte { return c.msg }

// Summary parses the ClientHello into a Summary, or returns nil when none
// was seen.
func (c *Conn) Summary() *Summary {
	if c.msg == nil {
		return nil
	}
	s, err := Summarize(c.msg)
	if err != nil {
		// Inspection already parsed this message, so this cannot happen.
		return nil
	}
	return s
}

// inspect reads records until the ClientHello is complete, or until it is
// clear that the input is something else.
func (c *Conn) inspect() {
	if !c.reserve(initialBuffer) {
		c.refuse(alertInternalError, ErrBusy)
		return
	}
	rr := recordReader{r: c.Conn, buf: make([]byte, 0, initialBuffer), reserve: c.reserve}
	msg, own, err := c.readHello(&rr, 0, false)
	// Whatever happens below, the reader gets every byte read.
	if len(rr.buf) > 0 {
		c.raw, c.pending = rr.buf, rr.buf
	}
	if err != nil {
		c.stop(err)
		return
	}
	mem := rr.buf
	if own {
		mem = msg
	}
	c.complete(msg, mem)
	if c.msg != nil && c.info.tls13 {
		// Hand on the hello's records alone until the server answers
		// them: what the client sent after them is the second hello's
		// to inspect if the answer is a HelloRetryRequest.
		c.bound = rr.off
		c.watch.Store(watchServerHello)
	}
}

// readHello reads records with rr until they hold a whole ClientHello and
// returns it, with own set when it is a buffer of its own rather than a view
// into rr.buf. base is what the Conn holds besides: the record buffer and
// the message together never take more than MaxBuffered-base bytes. With
// skipCCS, change_cipher_spec records before the hello are passed over.
func (c *Conn) readHello(rr *recordReader, base int, skipCCS bool) (msg []byte, own bool, err error) {
	a := assembler{reserve: rr.reserve}
	rr.limit = MaxBuffered - base
	for done := false; !done && err == nil; {
		var typ uint8
		var frag []byte
		typ, frag, err = rr.next()
		switch {
		case err != nil:
		case typ == recordTypeChangeCipherSpec && skipCCS && a.empty() && len(frag) == 1 && frag[0] == 1:
			// RFC 8446, Appendix D.4: in middlebox compatibility mode the
			// client sends change_cipher_spec before its second flight,
			// which may be the ClientHello after a HelloRetryRequest.
			// Section 5: the record is the single byte 1, and may not
			// come between the fragments of a handshake message.
		case typ != recordTypeHandshake:
			err = errNotHandshake
		default:
			done, err = a.add(frag, rr.limit-cap(rr.buf))
			if a.own {
				rr.limit = MaxBuffered - base - len(a.msg)
			}
		}
		held := base + cap(rr.buf)
		if a.own {
			held += cap(a.msg)
		}
		c.peak = max(c.peak, held)
	}
	if err != nil {
		return nil, false, err
	}
	return a.msg, a.own, nil
}

// held returns the bytes of memory the Conn keeps: the record buffer while
// it is being replayed and the buffer that holds the ClientHello, counted
// once when they are one.
func (c *Conn) held() int {
	n := cap(c.msgMem)
	if !sameArray(c.raw, c.msgMem) {
		n += cap(c.raw)
	}
	return n
}

// sameArray reports whether a and b share their last element, and so the
// array that each keeps alive.
func sameArray(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:cap(a)][cap(a)-1] == &b[:cap(b)][cap(b)-1]
}

// complete parses a whole ClientHello message; mem is the buffer that msg
// keeps alive.
func (c *Conn) complete(msg, mem []byte) {
	h, err := parseHello(msg)
	if err != nil {
		return // crypto/tls will answer with decode_error
	}
	info, err := inspectFlags(h)
	if err != nil {
		c.refuse(alertIllegalParameter, err)
		return
	}
	c.msg, c.msgMem, c.info = msg, mem, info
	c.seen.Store(true)
}

// stop ends inspection early: after a read error, at an oversized hello, or
// at input that is no ClientHello.
func (c *Conn) stop(err error) {
	switch err {
	case ErrTooLarge:
		c.refuse(alertDecodeError, err)
	case ErrBusy:
		c.refuse(alertInternalError, err)
	case errNotHandshake, errNotClientHello:
	default:
		c.readErr = err
	}
}

// refuse sends a fatal alert in a plaintext record, as a server does before
// ServerHello (RFC 8446, Section 6), and closes the connection.
func (c *Conn) refuse(desc byte, err error) {
	if !c.closed.Load() {
		// (A connection being closed, at shutdown say, gets no alert:
		// its budget is refused because it is closing.)
		c.Conn.Write([]byte{recordTypeAlert, 3, 3, 0, 2, alertLevelFatal, desc})
	}
	c.Conn.Close()
	c.fatal = err
	c.pending, c.raw = nil, nil
	c.Release()
}
