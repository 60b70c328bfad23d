package clienthello

// After a HelloRetryRequest (RFC 8446, Section 4.1.4) the client sends a
// second ClientHello, in plaintext records like the first, perhaps after a
// change_cipher_spec record (Appendix D.4). Section 4.1.2 has it repeat the
// first save for a listed few changes, and tls_flags is not among them, so
// the Conn inspects the second hello too: its tls_flags must be well formed
// and the same as the first's, or it is refused with illegal_parameter. The
// flags of the first hello stand.
//
// To know that a HelloRetryRequest was sent, the Conn watches what the
// server writes, from the first ClientHello to the server's first handshake
// message; nothing after.

// States of Conn.watch.
const (
	watchOff         = iota // nothing to watch for: no hello, or done
	watchServerHello        // waiting for the server's first handshake message
	watchRetry              // a HelloRetryRequest was written: inspect the next hello
)

const typeServerHello = 2

// helloRetryRequestRandom is the Random of a ServerHello that is a
// HelloRetryRequest: SHA-256("HelloRetryRequest") (RFC 8446, Section 4.1.3).
var helloRetryRequestRandom = []byte{
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11,
	0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e,
	0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
}

// serverHelloHead is as much of the server's first handshake message as it
// takes to tell a HelloRetryRequest: msg_type, the uint24 length,
// legacy_version and random (RFC 8446, Sections 4 and 4.1.3).
const serverHelloHead = 1 + 3 + 2 + 32

// A serverHelloScan reads the records a server writes, in whatever pieces it
// writes them, up to the random of the first handshake message. It keeps no
// bytes, only counts: a mismatch ends the scan.
type serverHelloScan struct {
	nhdr   int // bytes of the current record header seen
	length int // the current record's length, from its header
	left   int // fragment bytes of the current record not yet seen
	n      int // bytes of the message head seen, all as a HelloRetryRequest's
}

// Results of serverHelloScan.feed.
const (
	scanMore  = iota // the head is not complete yet
	scanRetry        // the message is a HelloRetryRequest
	scanOther        // anything else: a ServerHello, or no handshake record first
)

// feed takes the next bytes written.
func (s *serverHelloScan) feed(p []byte) int {
	for _, b := range p {
		if s.left == 0 {
			// RFC 8446, Section 5.1: ContentType type; ProtocolVersion
			// legacy_record_version; uint16 length.
			switch s.nhdr {
			case 0:
				if b != recordTypeHandshake {
					// An alert, say: the server answers with no ServerHello.
					return scanOther
				}
			case 3:
				s.length = int(b) << 8
			case 4:
				s.length |= int(b)
			}
			s.nhdr++
			if s.nhdr == recordHeaderLen {
				s.nhdr, s.left = 0, s.length
			}
			continue
		}
		s.left--
		// RFC 8446, Section 4: HandshakeType msg_type; uint24 length;
		// Section 4.1.3: ProtocolVersion legacy_version; Random random.
		switch {
		case s.n == 0 && b != typeServerHello:
			return scanOther
		case s.n >= 6 && b != helloRetryRequestRandom[s.n-6]:
			return scanOther
		}
		s.n++
		if s.n == serverHelloHead {
			return scanRetry
		}
	}
	return scanMore
}

// Write writes to the connection. Between the first ClientHello and the
// server's first handshake message it also looks at what is written, to
// learn whether that message is a HelloRetryRequest.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.rw.Write(p)
	if c.watch.Load() == watchServerHello {
		c.observe(p[:n])
	}
	return n, err
}

// observe feeds written bytes to the scan for the server's first handshake
// message.
func (c *Conn) observe(p []byte) {
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	switch c.scan.feed(p) {
	case scanRetry:
		c.watch.CompareAndSwap(watchServerHello, watchRetry)
	case scanOther:
		c.watch.CompareAndSwap(watchServerHello, watchOff)
	}
}

// afterHello runs on a Read once the reader has all of the first
// ClientHello's records, while the Conn still watches.
func (c *Conn) afterHello() {
	// The reader asks for more before the server has answered: not
	// crypto/tls, which answers every ClientHello first. No
	// HelloRetryRequest can come between, so stop watching.
	if c.watch.CompareAndSwap(watchServerHello, watchOff) {
		return
	}
	if c.watch.Load() == watchRetry {
		c.retryOnce.Do(c.inspectRetry)
	}
}

// inspectRetry inspects the ClientHello that answers a HelloRetryRequest,
// as inspect does the first: whole records are read until it is complete
// (skipping change_cipher_spec records before it), and every byte read is
// replayed unchanged unless the connection is refused.
func (c *Conn) inspectRetry() {
	defer c.watch.Store(watchOff)
	// The first hello's buffer stays (ClientHello returns it); bytes the
	// client sent past the first hello's records start the record buffer.
	base := cap(c.msgMem)
	if max(initialBuffer, len(c.pending)) > MaxBuffered-base {
		c.refuse(alertDecodeError, ErrTooLarge)
		return
	}
	size := max(initialBuffer, len(c.pending))
	if !c.reserve(size) {
		c.refuse(alertInternalError, ErrBusy)
		return
	}
	rr := recordReader{r: c.Conn, buf: make([]byte, len(c.pending), size), reserve: c.reserve}
	copy(rr.buf, c.pending)
	c.raw, c.pending = nil, nil
	msg, _, err := c.readHello(&rr, base, true)
	if len(rr.buf) > 0 {
		c.raw, c.pending = rr.buf, rr.buf
	}
	if err != nil {
		c.stop(err)
		return
	}
	h, err := parseHello(msg)
	if err != nil {
		return // crypto/tls will answer with decode_error
	}
	if _, err := inspectFlags(h); err != nil {
		c.refuse(alertIllegalParameter, err)
		return
	}
	first, _ := parseHello(c.msg) // it parsed before
	if err := sameFlags(first, h); err != nil {
		c.refuse(alertIllegalParameter, err)
		return
	}
	c.retried = true
}
