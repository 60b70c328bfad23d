package clienthello

import (
	"golang.org/x/crypto/cryptobyte"

	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// Summary describes a ClientHello for people debugging their clients. All
// lists keep the client's order.
//
// Every list of codepoints comes twice in the JSON: as numbers, under the
// names this report has always used ("cipher_suites", "extensions", ...),
// and as names in a parallel list of the same length whose key ends in
// "_names" ("cipher_suite_names", "extension_names", ...). Names are those
// of the IANA TLS registries (see CipherSuiteName, GroupName,
// SignatureSchemeName, ExtensionName and VersionName); GREASE values read
// "GREASE" and codepoints without a name read as hex, "0x1234". "ja4" is the
// hello's JA4 fingerprint and "ja4_r" its raw form (see the comment in
// ja4.go).
type Summary struct {
	ServerName              string       `json:"server_name"`
	LegacyVersion           uint16       `json:"legacy_version"`
	LegacyVersionName       string       `json:"legacy_version_name"`
	Versions                []uint16     `json:"supported_versions"`
	VersionNames            []string     `json:"supported_version_names"`
	ALPN                    []string     `json:"alpn"`
	CipherSuites            []uint16     `json:"cipher_suites"`
	CipherSuiteNames        []string     `json:"cipher_suite_names"`
	Groups                  []uint16     `json:"supported_groups"`
	GroupNames              []string     `json:"supported_group_names"`
	KeyShares               []uint16     `json:"key_share_groups"`
	KeyShareNames           []string     `json:"key_share_group_names"`
	SignatureAlgorithms     []uint16     `json:"signature_algorithms"`
	SignatureAlgorithmNames []string     `json:"signature_algorithm_names"`
	Extensions              []uint16     `json:"extensions"`
	ExtensionNames          []string     `json:"extension_names"`
	Flags                   tlsflags.Set `json:"tls_flags"`
	FlagsCodepoint          uint16       `json:"tls_flags_codepoint,omitempty"`
	JA4                     string       `json:"ja4"`
	JA4Raw                  string       `json:"ja4_r"`
}

// Summarize parses a complete ClientHello handshake message (with its
// four-byte header) into a Summary. Extensions whose contents do not parse
// are listed in Extensions and otherwise left out.
func Summarize(msg []byte) (*Summary, error) {
	h, err := parseHello(msg)
	if err != nil {
		return nil, err
	}
	fi, err := inspectFlags(h)
	if err != nil {
		return nil, err
	}
	sum := &Summary{
		LegacyVersion:  h.legacyVersion,
		Flags:          fi.flags,
		FlagsCodepoint: fi.codepoint,
		CipherSuites:   readUint16s(h.cipherSuites),
	}
	h.each(func(id uint16, data cryptobyte.String) {
		sum.Extensions = append(sum.Extensions, id)
		var list cryptobyte.String
		switch id {
		case extServerName:
			// RFC 6066, Section 3: ServerName server_name_list<1..2^16-1>.
			if !data.ReadUint16LengthPrefixed(&list) {
				return
			}
			for !list.Empty() {
				var nameType uint8
				var name cryptobyte.String
				if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
					return
				}
				if nameType == 0 {
					sum.ServerName = string(name)
				}
			}
		case extSupportedVersions:
			// RFC 8446, Section 4.2.1.
			if data.ReadUint8LengthPrefixed(&list) {
				sum.Versions = readUint16s(list)
			}
		case extALPN:
			// RFC 7301, Section 3.1: ProtocolName protocol_name_list<2..2^16-1>.
			if !data.ReadUint16LengthPrefixed(&list) {
				return
			}
			for !list.Empty() {
				var proto cryptobyte.String
				if !list.ReadUint8LengthPrefixed(&proto) {
					return
				}
				sum.ALPN = append(sum.ALPN, string(proto))
			}
		case extSupportedGroups:
			// RFC 8446, Section 4.2.7.
			if data.ReadUint16LengthPrefixed(&list) {
				sum.Groups = readUint16s(list)
			}
		case extSignatureAlgorithms:
			// RFC 8446, Section 4.2.3.
			if data.ReadUint16LengthPrefixed(&list) {
				sum.SignatureAlgorithms = readUint16s(list)
			}
		case extKeyShare:
			// RFC 8446, Section 4.2.8: KeyShareEntry client_shares<0..2^16-1>.
			if !data.ReadUint16LengthPrefixed(&list) {
				return
			}
			for !list.Empty() {
				var group uint16
				var key cryptobyte.String
				if !list.ReadUint16(&group) || !list.ReadUint16LengthPrefixed(&key) {
					return
				}
				sum.KeyShares = append(sum.KeyShares, group)
			}
		}
	})
	sum.LegacyVersionName = VersionName(sum.LegacyVersion)
	sum.VersionNames = nameList(sum.Versions, VersionName)
	sum.CipherSuiteNames = nameList(sum.CipherSuites, CipherSuiteName)
	sum.GroupNames = nameList(sum.Groups, GroupName)
	sum.KeyShareNames = nameList(sum.KeyShares, GroupName)
	sum.SignatureAlgorithmNames = nameList(sum.SignatureAlgorithms, SignatureSchemeName)
	sum.ExtensionNames = nameList(sum.Extensions, ExtensionName)
	sum.JA4, sum.JA4Raw = ja4(h)
	return sum, nil
}

// readUint16s reads a list of 16-bit values; an odd trailing byte is dropped.
func readUint16s(s cryptobyte.String) []uint16 {
	out := make([]uint16, 0, len(s)/2)
	var v uint16
	for s.ReadUint16(&v) {
		out = append(out, v)
	}
	return out
}
