package reqmtls

import (
	"github.com/req-mtls/req-mtls/internal/tlsflags"
	"github.com/req-mtls/req-mtls/internal/version"
)

// FlagRequestMTLS is the request-mTLS flag, 80 (an experimental value of
// draft-jhoyla-req-mtls-flag-02).
const FlagRequestMTLS = 80

// The codepoints of the tls_flags extension. The draft says TBD; every
// deployed request-mTLS client and server uses the experimental 0xfe01.
// BoringSSL uses 62. Servers read both.
const (
	CodepointExperimental uint16 = 0xfe01
	CodepointBoringSSL    uint16 = 62
)

// Flags is a set of TLS flags (0 to 2039). The zero value is the empty set.
// Flags are values: comparable and safe to copy.
type Flags struct{ s tlsflags.Set }

// RequestMTLSFlags is the set holding flag 80 alone, what a request-mTLS
// client sends.
var RequestMTLSFlags = Flags{tlsflags.Must(FlagRequestMTLS)}

// NewFlags returns the set of the given flags; a flag outside 0..2039 is an
// error.
func NewFlags(flags ...int) (Flags, error) {
	s, err := tlsflags.New(flags...)
	return Flags{s}, err
}

// ParseFlags parses a comma-separated list of flags, each decimal or 0x hex:
// "80", "0x50", "8,170,12" (the client's -tlsflags syntax).
func ParseFlags(list string) (Flags, error) {
	s, err := tlsflags.ParseList(list)
	return Flags{s}, err
}

// ParseFlagsExtension parses the extension_data of a tls_flags extension
// strictly (draft-ietf-tls-tlsflags, Section 2): a length byte that
// matches, at least one byte, and no trailing zero byte.
func ParseFlagsExtension(data []byte) (Flags, error) {
	s, err := tlsflags.Parse(data)
	return Flags{s}, err
}

// Has reports whether flag n is in the set.
func (f Flags) Has(n int) bool { return f.s.Has(n) }

// IsEmpty reports whether the set has no flags.
func (f Flags) IsEmpty() bool { return f.s.IsEmpty() }

// List returns the flags in ascending order.
func (f Flags) List() []int { return f.s.Flags() }

// String formats the set as /debug does: "[8 12 170]", "[]" when empty.
func (f Flags) String() string { return f.s.String() }

// MarshalJSON encodes the set as an array of numbers.
func (f Flags) MarshalJSON() ([]byte, error) { return f.s.MarshalJSON() }

// ExtensionData returns the extension_data of a tls_flags extension that
// carries the set, minimally encoded. The empty set has no encoding.
func (f Flags) ExtensionData() ([]byte, error) { return f.s.ExtensionData() }

// Version returns a one-line description of the running binary's build for
// a program's -version flag: the module version, the VCS revision and
// whether the tree was modified, and the Go version, as the go command
// recorded them ("client v1.2.0 go1.26.0").
func Version(program string) string { return version.String(program) }
