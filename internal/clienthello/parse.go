// Package clienthello reads the TLS ClientHello of incoming connections before
// crypto/tls does, so that a server on the stock Go toolchain can see the
// contents of the tls_flags extension (draft-ietf-tls-tlsflags) that
// tls.ClientHelloInfo does not expose: ClientHelloInfo.Extensions lists
// extension IDs only, never their data.
//
// Listener wraps accepted connections in a Conn. On its first Read a Conn
// buffers whole TLS records until the complete ClientHello handshake message
// is in, parses it, and then replays the buffered bytes unchanged, so
// crypto/tls sees exactly what the client sent. When the server answers with
// a HelloRetryRequest, the second ClientHello is inspected the same way, and
// must carry the same tls_flags as the first (RFC 8446, Section 4.1.2).
package clienthello

import (
	"bytes"
	"errors"

	"golang.org/x/crypto/cryptobyte"

	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// Extension and message numbers used here (RFC 8446, Section 4).
const (
	typeClientHello = 1

	extServerName          uint16 = 0
	extSupportedGroups     uint16 = 10
	extSignatureAlgorithms uint16 = 13
	extALPN                uint16 = 16
	extSupportedVersions   uint16 = 43
	extKeyShare            uint16 = 51

	versionTLS13 uint16 = 0x0304
)

// errDecode is returned for a ClientHello that does not follow RFC 8446,
// Section 4.1.2. Such hellos are left to crypto/tls, which answers them with
// its own decode_error.
var errDecode = errors.New("clienthello: malformed ClientHello")

// hello holds the fixed fields of a ClientHello and its extension block, as
// views into the message; walking it allocates nothing.
type hello struct {
	legacyVersion uint16
	cipherSuites  cryptobyte.String
	extensions    cryptobyte.String
}

// parseHello parses a complete ClientHello handshake message (type, 24-bit
// length, body) as laid out in RFC 8446, Section 4.1.2.
func parseHello(msg []byte) (hello, error) {
	var h hello
	s := cryptobyte.String(msg)
	var msgType uint8
	var body, sessionID, compression cryptobyte.String
	if !s.ReadUint8(&msgType) || msgType != typeClientHello ||
		!s.ReadUint24LengthPrefixed(&body) || !s.Empty() {
		return h, errDecode
	}
	if !body.ReadUint16(&h.legacyVersion) ||
		!body.Skip(32) || // random
		!body.ReadUint8LengthPrefixed(&sessionID) || len(sessionID) > 32 ||
		!body.ReadUint16LengthPrefixed(&h.cipherSuites) ||
		len(h.cipherSuites) == 0 || len(h.cipherSuites)%2 != 0 ||
		!body.ReadUint8LengthPrefixed(&compression) || len(compression) == 0 {
		return h, errDecode
	}
	if body.Empty() {
		// A hello from before TLS 1.2 may end without an extension block.
		return h, nil
	}
	if !body.ReadUint16LengthPrefixed(&h.extensions) || !body.Empty() {
		return h, errDecode
	}
	// Check the framing of every extension once, so that walkers need not.
	exts := h.extensions
	for !exts.Empty() {
		var id uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&id) || !exts.ReadUint16LengthPrefixed(&data) {
			return h, errDecode
		}
	}
	return h, nil
}

// each calls fn for every extension in order, with its extension_data.
func (h hello) each(fn func(id uint16, data cryptobyte.String)) {
	exts := h.extensions
	for !exts.Empty() {
		var id uint16
		var data cryptobyte.String
		exts.ReadUint16(&id)
		exts.ReadUint16LengthPrefixed(&data)
		fn(id, data)
	}
}

// FlagsError reports a tls_flags extension that must abort the handshake with
// an illegal_parameter alert (draft-ietf-tls-tlsflags, Section 2): malformed,
// repeated, or, in the ClientHello after a HelloRetryRequest, not the same as
// in the first (RFC 8446, Section 4.1.2).
type FlagsError struct {
	Codepoint uint16
	Reason    string
}

func (e *FlagsError) Error() string {
	return "clienthello: tls_flags extension " + codepointName(e.Codepoint) + ": " + e.Reason
}

func codepointName(cp uint16) string {
	if cp == tlsflags.CodepointBoringSSL {
		return "62"
	}
	return "0xfe01"
}

// flagsInfo is what a server needs from a ClientHello on every connection.
type flagsInfo struct {
	flags     tlsflags.Set
	codepoint uint16 // 0 when no tls_flags extension was sent
	tls13     bool
}

// flagsExtensions is what a ClientHello carries of tls_flags: the
// extension_data under each codepoint, as sent.
type flagsExtensions struct {
	exp, bssl         cryptobyte.String
	seenExp, seenBSSL bool
	dupe              uint16 // a codepoint sent twice, or 0
	tls13             bool
}

// findFlags walks the extensions once for tls_flags, under either
// codepoint, and supported_versions.
func findFlags(h hello) flagsExtensions {
	var fe flagsExtensions
	h.each(func(id uint16, data cryptobyte.String) {
		switch id {
		case extSupportedVersions:
			// RFC 8446, Section 4.2.1: ProtocolVersion versions<2..254>.
			var vs cryptobyte.String
			if !data.ReadUint8LengthPrefixed(&vs) {
				return
			}
			// Stop at a stray odd byte: ReadUint16 does not consume it.
			for v := uint16(0); vs.ReadUint16(&v); {
				if v == versionTLS13 {
					fe.tls13 = true
				}
			}
		case tlsflags.CodepointExperimental:
			if fe.seenExp {
				fe.dupe = id
			}
			fe.seenExp, fe.exp = true, data
		case tlsflags.CodepointBoringSSL:
			if fe.seenBSSL {
				fe.dupe = id
			}
			fe.seenBSSL, fe.bssl = true, data
		}
	})
	return fe
}

// inspectFlags finds the tls_flags extension under either codepoint. The
// extension means nothing under TLS 1.2 (draft-ietf-tls-tlsflags, Section
// 1), so a hello that does not offer TLS 1.3 has its flags ignored. A
// malformed or repeated extension in a TLS 1.3 hello is a *FlagsError. When
// both codepoints are present their flags are merged and the experimental
// codepoint is reported.
func inspectFlags(h hello) (flagsInfo, error) {
	fe := findFlags(h)
	fi := flagsInfo{tls13: fe.tls13}
	if !fe.tls13 || (!fe.seenExp && !fe.seenBSSL) {
		return fi, nil
	}
	if fe.dupe != 0 {
		return fi, &FlagsError{Codepoint: fe.dupe, Reason: "sent twice"}
	}
	if fe.seenBSSL {
		s, err := tlsflags.Parse(fe.bssl)
		if err != nil {
			return fi, &FlagsError{Codepoint: tlsflags.CodepointBoringSSL, Reason: "not a minimal flag vector"}
		}
		fi.flags, fi.codepoint = s, tlsflags.CodepointBoringSSL
	}
	if fe.seenExp {
		s, err := tlsflags.Parse(fe.exp)
		if err != nil {
			return fi, &FlagsError{Codepoint: tlsflags.CodepointExperimental, Reason: "not a minimal flag vector"}
		}
		if fe.seenBSSL {
			s = s.Union(fi.flags)
		}
		fi.flags, fi.codepoint = s, tlsflags.CodepointExperimental
	}
	return fi, nil
}

// sameFlags checks that the ClientHello sent after a HelloRetryRequest
// carries the tls_flags of the first, under the same codepoints, byte for
// byte: RFC 8446, Section 4.1.2 has the client send "the same ClientHello
// without modification" save for the changes it lists, and tls_flags is not
// among them. Encodings are minimal, so equal bytes are equal flag sets.
func sameFlags(first, second hello) error {
	a, b := findFlags(first), findFlags(second)
	for _, cp := range []struct {
		id           uint16
		seenA, seenB bool
		dataA, dataB []byte
	}{
		{tlsflags.CodepointExperimental, a.seenExp, b.seenExp, a.exp, b.exp},
		{tlsflags.CodepointBoringSSL, a.seenBSSL, b.seenBSSL, a.bssl, b.bssl},
	} {
		switch {
		case cp.seenA && !cp.seenB:
			return &FlagsError{Codepoint: cp.id, Reason: "left out of the ClientHello after HelloRetryRequest"}
		case !cp.seenA && cp.seenB:
			return &FlagsError{Codepoint: cp.id, Reason: "added to the ClientHello after HelloRetryRequest"}
		case !bytes.Equal(cp.dataA, cp.dataB):
			return &FlagsError{Codepoint: cp.id, Reason: "changed in the ClientHello after HelloRetryRequest"}
		}
	}
	return nil
}
