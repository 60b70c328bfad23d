package clienthello

import (
	"errors"
	"io"
)

// errNotHandshake stops inspection at a record that no ClientHello travels
// in (or at bytes that are not a TLS record at all). What was read is
// replayed, and crypto/tls judges it as it always does.
var errNotHandshake = errors.New("clienthello: not a handshake record")

// A recordReader reads TLS records as crypto/tls does, into one buffer that
// keeps every byte read: the reader of the Conn is given them all afterwards.
// The buffer grows as records need, never past limit bytes of capacity.
type recordReader struct {
	r     io.Reader
	buf   []byte // every byte read; records start at 0
	off   int    // where the next record starts in buf
	limit int    // the most cap(buf) may grow to
	// reserve, if set, is asked for the bytes each growth adds; when it
	// refuses, fill returns ErrBusy.
	reserve func(n int) bool
}

// next reads the next whole record and returns its type and fragment, a view
// into buf that the caller must not keep past the next call. It returns
// errNotHandshake, having read no further than the record header, for a
// record that is neither handshake nor change_cipher_spec or whose length is
// not that of a plaintext record; ErrTooLarge when the record does not fit
// within limit; or the error of a read that ended before the record did.
func (rr *recordReader) next() (typ uint8, frag []byte, err error) {
	if err := rr.fill(rr.off + recordHeaderLen); err != nil {
		return 0, nil, err
	}
	// RFC 8446, Section 5.1: ContentType type; ProtocolVersion
	// legacy_record_version; uint16 length; opaque fragment[length].
	// Plaintext fragments are 1..2^14 bytes long (zero-length handshake
	// fragments are not allowed).
	hdr := rr.buf[rr.off : rr.off+recordHeaderLen]
	typ, n := hdr[0], int(hdr[3])<<8|int(hdr[4])
	if typ != recordTypeHandshake && typ != recordTypeChangeCipherSpec ||
		hdr[1] != 3 || n == 0 || n > maxPlaintext {
		return 0, nil, errNotHandshake
	}
	end := rr.off + recordHeaderLen + n
	if err := rr.fill(end); err != nil {
		return 0, nil, err
	}
	frag = rr.buf[rr.off+recordHeaderLen : end : end]
	rr.off = end
	return typ, frag, nil
}

// fill reads until buf holds at least n bytes. A read may bring more; what
// it brings is kept.
func (rr *recordReader) fill(n int) error {
	for len(rr.buf) < n {
		if len(rr.buf) == cap(rr.buf) {
			if n > rr.limit {
				return ErrTooLarge
			}
			// Double, as records keep coming, within the limit.
			size := min(max(2*cap(rr.buf), n), rr.limit)
			if rr.reserve != nil && !rr.reserve(size-cap(rr.buf)) {
				return ErrBusy
			}
			grown := make([]byte, len(rr.buf), size)
			copy(grown, rr.buf)
			rr.buf = grown
		}
		m, err := rr.r.Read(rr.buf[len(rr.buf):cap(rr.buf)])
		rr.buf = rr.buf[:len(rr.buf)+m]
		if err != nil && len(rr.buf) < n {
			return err
		}
	}
	return nil
}

// An assembler gathers one handshake message from the fragments of
// successive handshake records (RFC 8446, Section 5.1: a message may span
// records). A message that arrives whole in one fragment is a view into that
// fragment; any other is copied into one buffer of exactly its length,
// allocated once its four-byte header is in.
type assembler struct {
	hdr  [4]byte // the message header while it is still incomplete
	nhdr int
	msg  []byte // the message once its length is known
	n    int    // bytes of msg filled
	own  bool   // msg is a buffer of its own, not a view into a fragment
	// reserve, if set, is asked for a buffer of its own first; when it
	// refuses, add returns ErrBusy.
	reserve func(n int) bool
}

// empty reports whether no fragment of the message has come yet.
func (a *assembler) empty() bool { return a.nhdr == 0 && a.msg == nil }

// errNotClientHello stops inspection at a handshake message that is not a
// ClientHello.
var errNotClientHello = errors.New("clienthello: not a ClientHello")

// add takes the next fragment and reports whether the message is complete.
// Bytes after the end of the message are left where they are. room is the
// most the message may take if it needs a buffer of its own: a larger one is
// ErrTooLarge.
func (a *assembler) add(frag []byte, room int) (done bool, err error) {
	own := func(msgLen int) error {
		if a.reserve != nil && !a.reserve(msgLen) {
			return ErrBusy
		}
		a.msg, a.own = make([]byte, msgLen), true
		return nil
	}
	switch {
	case a.msg != nil:
	case a.nhdr == 0 && len(frag) >= len(a.hdr):
		// The header in this fragment, as nearly always.
		msgLen, err := messageLength(frag, room)
		if err != nil {
			return false, err
		}
		if len(frag) >= msgLen {
			a.msg, a.n = frag[:msgLen:msgLen], msgLen
			return true, nil
		}
		if err := own(msgLen); err != nil {
			return false, err
		}
	default:
		// The header itself spans records.
		k := copy(a.hdr[a.nhdr:], frag)
		a.nhdr, frag = a.nhdr+k, frag[k:]
		if a.hdr[0] != typeClientHello {
			return false, errNotClientHello
		}
		if a.nhdr < len(a.hdr) {
			return false, nil
		}
		msgLen, err := messageLength(a.hdr[:], room)
		if err != nil {
			return false, err
		}
		if err := own(msgLen); err != nil {
			return false, err
		}
		a.n = copy(a.msg, a.hdr[:])
	}
	a.n += copy(a.msg[a.n:], frag)
	return a.n == len(a.msg), nil
}

// messageLength reads the header at the start of a ClientHello (RFC 8446,
// Section 4: HandshakeType msg_type; uint24 length) and returns the length
// of the whole message. A message that b does not hold whole must fit in
// room bytes.
func messageLength(b []byte, room int) (int, error) {
	if b[0] != typeClientHello {
		return 0, errNotClientHello
	}
	msgLen := 4 + (int(b[1])<<16 | int(b[2])<<8 | int(b[3]))
	if len(b) < msgLen && msgLen > room {
		return 0, ErrTooLarge
	}
	return msgLen, nil
}
