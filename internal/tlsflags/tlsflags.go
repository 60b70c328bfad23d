// Package tlsflags implements the TLS Flags extension of draft-ietf-tls-tlsflags
// (TLS 1.3 only) and the request-mTLS flag of draft-jhoyla-req-mtls-flag-02.
//
// The extension carries a bit string, opaque flags<1..255>: flag N is bit N%8
// (least significant first) of byte N/8, so flags 0 to 2039 can be expressed.
// Encoding is minimal: the last byte is never zero. A receiver treats any other
// form as malformed and aborts the handshake with illegal_parameter.
package tlsflags

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

const (
	// MaxFlag is the highest flag number the 255-byte vector can carry.
	MaxFlag = 255*8 - 1

	// RequestMTLS is the request-mTLS flag (draft-jhoyla-req-mtls-flag-02,
	// experimental value 0x50): "I hold a client certificate; ask me for it".
	RequestMTLS = 80

	// CodepointExperimental is the extension codepoint the deployed request-mTLS
	// servers and clients use while the draft's own codepoint is TBD.
	CodepointExperimental uint16 = 0xfe01
	// CodepointBoringSSL is the codepoint BoringSSL assigns to tls_flags.
	CodepointBoringSSL uint16 = 62
)

// ErrMalformed is returned for every extension_data that is not a canonical
// encoding. The draft (Section 2) requires a receiver to abort the handshake
// with an illegal_parameter alert when it sees one.
var ErrMalformed = errors.New("tlsflags: malformed tls_flags extension")

// A Set is a set of flag numbers from 0 to MaxFlag. The zero value is the
// empty set. Sets are immutable values, comparable with ==, and safe for
// concurrent use.
type Set struct {
	// b holds the minimal flag bytes (no trailing zero byte), as they appear
	// on the wire after the length byte.
	b string
}

// New returns the set holding flags. Repeated flags are allowed here; a flag
// outside 0..MaxFlag is an error.
func New(flags ...int) (Set, error) {
	var b []byte
	for _, f := range flags {
		if f < 0 || f > MaxFlag {
			return Set{}, fmt.Errorf("tlsflags: flag %d out of range 0..%d", f, MaxFlag)
		}
		for len(b) <= f/8 {
			b = append(b, 0)
		}
		b[f/8] |= 1 << (f % 8)
	}
	return Set{b: string(b)}, nil
}

// Must is like New but panics on an out-of-range flag. It is meant for
// constants in programs and tests.
func Must(flags ...int) Set {
	s, err := New(flags...)
	if err != nil {
		panic(err)
	}
	return s
}

// Has reports whether flag n is in the set.
func (s Set) Has(n int) bool {
	if n < 0 || n/8 >= len(s.b) {
		return false
	}
	return s.b[n/8]&(1<<(n%8)) != 0
}

// IsEmpty reports whether the set has no flags.
func (s Set) IsEmpty() bool { return s.b == "" }

// Flags returns the flags in ascending order.
func (s Set) Flags() []int {
	var out []int
	for i := 0; i < len(s.b); i++ {
		for bit := 0; bit < 8; bit++ {
			if s.b[i]&(1<<bit) != 0 {
				out = append(out, i*8+bit)
			}
		}
	}
	return out
}

// Intersect returns the flags present in both s and t.
func (s Set) Intersect(t Set) Set {
	n := min(len(s.b), len(t.b))
	b := make([]byte, n)
	for i := range n {
		b[i] = s.b[i] & t.b[i]
	}
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return Set{b: string(b)}
}

// String formats the set as its flags in ascending order, space separated in
// brackets: "[8 12 170]", or "[]" for the empty set.
func (s Set) String() string {
	var sb strings.Builder
	sb.WriteByte('[')
	for i, f := range s.Flags() {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(strconv.Itoa(f))
	}
	sb.WriteByte(']')
	return sb.String()
}

// MarshalJSON encodes the set as an array of flag numbers, [] when empty.
func (s Set) MarshalJSON() ([]byte, error) {
	return []byte(strings.ReplaceAll(s.String(), " ", ",")), nil
}

// ExtensionData returns the extension_data of a tls_flags extension carrying
// s: one length byte, then the minimal flag bytes. The empty set has no
// valid encoding (the vector holds at least one byte); a sender leaves the
// extension out instead, so ExtensionData returns an error for it.
func (s Set) ExtensionData() ([]byte, error) {
	if s.IsEmpty() {
		return nil, errors.New("tlsflags: the empty set has no encoding; omit the extension")
	}
	var b cryptobyte.Builder
	// draft-ietf-tls-tlsflags, Section 2: opaque flags<1..255>.
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddBytes([]byte(s.b))
	})
	return b.Bytes()
}

// Parse decodes extension_data strictly. An empty vector, a length byte that
// disagrees with the data, trailing bytes, an all-zero value or a trailing
// zero byte all return ErrMalformed. Unknown flags are not an error: in a
// ClientHello they are ignored by whoever does not know them.
func Parse(data []byte) (Set, error) {
	s := cryptobyte.String(data)
	var flags cryptobyte.String
	// draft-ietf-tls-tlsflags, Section 2: opaque flags<1..255>, and the
	// encoding is minimal, so the last byte (and therefore the whole value)
	// is never zero.
	if !s.ReadUint8LengthPrefixed(&flags) || !s.Empty() ||
		len(flags) == 0 || flags[len(flags)-1] == 0 {
		return Set{}, ErrMalformed
	}
	return Set{b: string(flags)}, nil
}

// ParseList parses a comma-separated list of flag numbers, each decimal or
// 0x-prefixed hexadecimal ("80", "0x50", "8,170,12"), as given on a command
// line. An empty element, a number out of range or a repeated flag is an error.
func ParseList(list string) (Set, error) {
	var flags []int
	seen := map[int]bool{}
	for _, field := range strings.Split(list, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			return Set{}, fmt.Errorf("tlsflags: empty element in flag list %q", list)
		}
		base, digits := 10, field
		if rest, ok := strings.CutPrefix(strings.ToLower(field), "0x"); ok {
			base, digits = 16, rest
		}
		n, err := strconv.ParseUint(digits, base, 16)
		if err != nil || n > MaxFlag {
			return Set{}, fmt.Errorf("tlsflags: flag %q is not a number from 0 to %d", field, MaxFlag)
		}
		if seen[int(n)] {
			return Set{}, fmt.Errorf("tlsflags: flag %d given twice in %q", n, list)
		}
		seen[int(n)] = true
		flags = append(flags, int(n))
	}
	return New(flags...)
}

// Union returns the flags present in s or t.
func (s Set) Union(t Set) Set {
	if len(s.b) < len(t.b) {
		s, t = t, s
	}
	b := []byte(s.b)
	for i := range len(t.b) {
		b[i] |= t.b[i]
	}
	return Set{b: string(b)}
}
