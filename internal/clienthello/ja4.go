package clienthello

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// JA4 fingerprints of ClientHellos, as FoxIO defines them in the JA4
// technical details (github.com/FoxIO-LLC/ja4, technical_details/JA4.md):
//
//	JA4   = a_b_c
//	a     = "t" (TLS over TCP; this server never sees QUIC or DTLS)
//	        + version: the highest supported_versions value, or the
//	          legacy_version when there is no such extension: "13", "12",
//	          "11", "10", "s3", "s2", "s1", "d1", "d2", "d3", else "00"
//	        + "d" when a server_name extension is present, else "i"
//	        + number of cipher suites, two digits, at most 99
//	        + number of extensions, two digits, at most 99 (SNI and ALPN
//	          included)
//	        + first and last character of the first ALPN protocol: "00"
//	          when there is none or it is empty; the first and last hex
//	          digits of the protocol when its first or last byte is not an
//	          ASCII letter or digit
//	b     = sha256(cipher suites as four lowercase hex digits, sorted,
//	        joined by ","), first 12 hex digits
//	c     = sha256(extensions, as b, without server_name (0x0000) and ALPN
//	        (0x0010); then, when the hello has signature algorithms, "_" and
//	        those in the client's order), first 12 hex digits
//
// GREASE values (RFC 8701) are left out everywhere, as the specification
// says: versions, cipher suites, extensions and signature algorithms (some
// implementations kept GREASE in the signature algorithms until FoxIO's
// ja4 issue 305 pointed out that this goes against the specification). A hash of an empty list is written
// as "000000000000". JA4_r is the same with b and c unhashed.
//
// When an extension is sent twice, each copy counts and appears in c;
// versions, ALPN and signature algorithms come from the first copy.

const ja4Empty = "000000000000"

// ja4Versions are the JA4 version codes.
var ja4Versions = map[uint16]string{
	0x0304: "13",
	0x0303: "12",
	0x0302: "11",
	0x0301: "10",
	0x0300: "s3",
	0x0200: "s2",
	0x0002: "s2",
	0x0100: "s1",
	0xfeff: "d1",
	0xfefd: "d2",
	0xfefc: "d3",
}

// ja4 returns the JA4 fingerprint of h and its raw form, JA4_r.
func ja4(h hello) (fingerprint, raw string) {
	var (
		ciphers, exts, sigs, versions         []uint16
		sni, seenVersions, seenALPN, seenSigs bool
		alpn                                  []byte
	)
	for s := h.cipherSuites; ; {
		var v uint16
		if !s.ReadUint16(&v) {
			break
		}
		if !isGREASE(v) {
			ciphers = append(ciphers, v)
		}
	}
	h.each(func(id uint16, data cryptobyte.String) {
		if isGREASE(id) {
			return
		}
		exts = append(exts, id)
		var list cryptobyte.String
		switch id {
		case extServerName:
			sni = true
		case extALPN:
			if seenALPN {
				return
			}
			seenALPN = true
			// RFC 7301, Section 3.1: ProtocolName protocol_name_list<2..2^16-1>.
			var proto cryptobyte.String
			if data.ReadUint16LengthPrefixed(&list) && list.ReadUint8LengthPrefixed(&proto) {
				alpn = proto
			}
		case extSignatureAlgorithms:
			if seenSigs {
				return
			}
			seenSigs = true
			if data.ReadUint16LengthPrefixed(&list) {
				sigs = appendNonGREASE(sigs, list)
			}
		case extSupportedVersions:
			if seenVersions {
				return
			}
			seenVersions = true
			if data.ReadUint8LengthPrefixed(&list) {
				versions = appendNonGREASE(versions, list)
			}
		}
	})

	version := h.legacyVersion
	if seenVersions {
		version = 0 // "00" unless the extension names a version
		if len(versions) > 0 {
			version = slices.Max(versions)
		}
	}
	vcode, ok := ja4Versions[version]
	if !ok {
		vcode = "00"
	}
	dest := "i"
	if sni {
		dest = "d"
	}
	a := "t" + vcode + dest + twoDigits(len(ciphers)) + twoDigits(len(exts)) + ja4ALPN(alpn)

	slices.Sort(ciphers)
	b := hexList(ciphers)

	exts = slices.DeleteFunc(exts, func(id uint16) bool { return id == extServerName || id == extALPN })
	slices.Sort(exts)
	c := hexList(exts)
	if len(sigs) > 0 {
		c += "_" + hexList(sigs)
	}

	hb, hc := ja4Empty, ja4Empty
	if len(ciphers) > 0 {
		hb = hash12(b)
	}
	if len(exts) > 0 {
		hc = hash12(c)
	}
	return a + "_" + hb + "_" + hc, a + "_" + b + "_" + c
}

// appendNonGREASE appends the 16-bit values of s that are not GREASE; an odd
// trailing byte is dropped.
func appendNonGREASE(out []uint16, s cryptobyte.String) []uint16 {
	var v uint16
	for s.ReadUint16(&v) {
		if !isGREASE(v) {
			out = append(out, v)
		}
	}
	return out
}

// ja4ALPN returns the two ALPN characters of JA4_a for the first protocol.
func ja4ALPN(proto []byte) string {
	if len(proto) == 0 {
		return "00"
	}
	first, last := proto[0], proto[len(proto)-1]
	if isAlnum(first) && isAlnum(last) {
		return string([]byte{first, last})
	}
	const digits = "0123456789abcdef"
	return string([]byte{digits[first>>4], digits[last&0xf]})
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
}

// twoDigits formats a count as two digits, at most 99.
func twoDigits(n int) string {
	n = min(n, 99)
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}

// hexList joins values as four lowercase hex digits with commas.
func hexList(list []uint16) string {
	var b strings.Builder
	b.Grow(5 * len(list))
	for i, v := range list {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(hexName(v)[2:])
	}
	return b.String()
}

// hash12 returns the first 12 lowercase hex digits of the SHA-256 of s.
func hash12(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}
