package clienthello

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// MaxBuffered bounds the bytes a Conn holds while it waits for a complete
// ClientHello: record headers, fragments and anything read past them. A
// ClientHello that does not fit is refused with a decode_error alert. Go's
// own ClientHello is about 1.5 KB, the largest browsers send about 2 KB.
const MaxBuffered = 64 << 10

// initialBuffer is the first read buffer's size: enough for the ClientHello
// of common clients, including post-quantum key shares, in one allocation.
const initialBuffer = 2048

const (
	recordTypeAlert     = 21
	recordTypeHandshake = 22
	recordHeaderLen     = 5
	maxPlaintext        = 1 << 14 // RFC 8446, Section 5.1

	alertLevelFatal       = 2
	alertDecodeError      = 50
	alertIllegalParameter = 47
)

// ErrTooLarge is returned by Read when a ClientHello does not fit in
// MaxBuffered bytes.
var ErrTooLarge = fmt.Errorf("clienthello: ClientHello larger than %d bytes refused", MaxBuffered)

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
	return NewConn(c), nil
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
// The accessor methods report what inspection found. They are meant to be
// called once the reader has consumed the ClientHello, as in
// tls.Config.GetConfigForClient (whose ClientHelloInfo.Conn is the Conn) or
// after the handshake; before that they report nothing.
type Conn struct {
	net.Conn

	once    sync.Once
	pending []byte // bytes read during inspection, not yet returned by Read
	readErr error  // an error met while inspecting, returned after pending
	fatal   error  // the connection was refused; every Read returns it

	msg  []byte // the complete ClientHello message, nil if none was seen
	info flagsInfo

	peak int // the most bytes held at once, for tests (see held)
}

// NewConn wraps c. Use it where connections are accepted by other means than
// a Listener.
func NewConn(c net.Conn) *Conn {
	return &Conn{Conn: c}
}

// Read reads data from the connection, inspecting the ClientHello first.
func (c *Conn) Read(p []byte) (int, error) {
	c.once.Do(c.inspect)
	if c.fatal != nil {
		return 0, c.fatal
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	if err := c.readErr; err != nil {
		// Deadline errors are not sticky on a net.Conn: report this one
		// once, then read afresh.
		c.readErr = nil
		return 0, err
	}
	return c.Conn.Read(p)
}

// HelloSeen reports whether a well-formed ClientHello was read.
func (c *Conn) HelloSeen() bool { return c.msg != nil }

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
	buf := make([]byte, 0, initialBuffer)
	var hs []byte   // the handshake message so far
	copied := false // hs no longer aliases buf
	// fill reads until buf holds at least n bytes.
	fill := func(n int) error {
		for len(buf) < n {
			if n > MaxBuffered {
				return ErrTooLarge
			}
			if len(buf) == cap(buf) {
				grown := make([]byte, len(buf), min(2*cap(buf), MaxBuffered))
				copy(grown, buf)
				buf = grown
			}
			c.note(buf, hs, copied)
			m, err := c.Conn.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+m]
			if err != nil && len(buf) < n {
				return err
			}
		}
		return nil
	}
	// Whatever happens below, the reader gets every byte read so far.
	defer func() { c.pending = buf }()

	for off := 0; ; {
		if err := fill(off + recordHeaderLen); err != nil {
			c.stop(err)
			return
		}
		// RFC 8446, Section 5.1: ContentType type; ProtocolVersion
		// legacy_record_version; uint16 length. Anything but a handshake
		// record of a plausible size is crypto/tls's to judge.
		hdr := buf[off : off+recordHeaderLen]
		n := int(hdr[3])<<8 | int(hdr[4])
		if hdr[0] != recordTypeHandshake || hdr[1] != 3 || n == 0 || n > maxPlaintext {
			return
		}
		if err := fill(off + recordHeaderLen + n); err != nil {
			c.stop(err)
			return
		}
		frag := buf[off+recordHeaderLen : off+recordHeaderLen+n]
		off += recordHeaderLen + n
		switch {
		case hs == nil:
			hs = frag
		case !copied:
			// The message spans records: gather it apart from the
			// record headers (appending in place would overwrite the
			// bytes that follow in buf, which the reader must get).
			hs = append(append(make([]byte, 0, len(hs)+n), hs...), frag...)
			copied = true
		default:
			hs = append(hs, frag...)
		}
		if len(hs) < 4 {
			continue
		}
		if hs[0] != typeClientHello {
			return
		}
		msgLen := 4 + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
		if msgLen > MaxBuffered-recordHeaderLen {
			c.refuse(alertDecodeError, ErrTooLarge)
			return
		}
		if len(hs) < msgLen {
			if !copied {
				// Keep the message safe from buf's growth.
				hs = append(make([]byte, 0, msgLen), hs...)
				copied = true
			}
			continue
		}
		c.note(buf, hs, copied)
		c.complete(hs[:msgLen])
		return
	}
}

// note records the bytes held during inspection in c.peak.
func (c *Conn) note(buf, hs []byte, copied bool) {
	n := cap(buf)
	if copied {
		n += cap(hs)
	}
	c.peak = max(c.peak, n)
}

// held returns the bytes of memory the Conn keeps: the buffer of bytes not
// yet replayed and the ClientHello, counted once when one holds the other.
func (c *Conn) held() int {
	n := cap(c.msg)
	if cap(c.pending) > 0 && !sameArray(c.pending, c.msg) {
		n += cap(c.pending)
	}
	return n
}

// sameArray reports whether a and b share their last element, and so the
// array that each keeps alive.
func sameArray(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:cap(a)][cap(a)-1] == &b[:cap(b)][cap(b)-1]
}

// complete parses a whole ClientHello message.
func (c *Conn) complete(msg []byte) {
	h, err := parseHello(msg)
	if err != nil {
		return // crypto/tls will answer with decode_error
	}
	info, err := inspectFlags(h)
	if err != nil {
		c.refuse(alertIllegalParameter, err)
		return
	}
	c.msg, c.info = msg, info
}

// stop ends inspection after a read error or an oversized hello.
func (c *Conn) stop(err error) {
	if errors.Is(err, ErrTooLarge) {
		c.refuse(alertDecodeError, err)
		return
	}
	c.readErr = err
}

// refuse sends a fatal alert in a plaintext record, as a server does before
// ServerHello (RFC 8446, Section 6), and closes the connection.
func (c *Conn) refuse(desc byte, err error) {
	c.Conn.Write([]byte{recordTypeAlert, 3, 3, 0, 2, alertLevelFatal, desc})
	c.Conn.Close()
	c.fatal = err
}
