package clienthello

import (
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// The JA4 technical details (FoxIO-LLC/ja4, technical_details/JA4.md) work
// one example through: a hello with 15 cipher suites, 16 extensions, ALPN
// "h2" and 8 signature algorithms. These are its published intermediate
// strings and hashes.
const (
	specCiphers = "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
	specExts    = "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
	specSigs    = "0403,0804,0401,0503,0805,0501,0806,0601"
	specJA4     = "t13d1516h2_8daaf6152771_e5627efa2ab1"
	specJA4Raw  = "t13d1516h2_" + specCiphers + "_" + specExts + "_" + specSigs
)

func TestJA4SpecHashes(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{specCiphers, "8daaf6152771"},
		{specExts + "_" + specSigs, "e5627efa2ab1"},
		{specExts, "6d807ffa2a79"}, // the spec's example without signature algorithms
	} {
		if got := hash12(c.in); got != c.want {
			t.Errorf("hash12(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

// TestJA4SpecExample fingerprints a real ClientHello whose JA4 is the one
// the specification publishes. testdata/ja4/curl-8.6.0-macos.hex comes from
// the JA4 tests of fingerproxy (github.com/wi1dcard/fingerproxy,
// pkg/ja4/ja4_test.go, TestMacCurl860), where it is labelled curl 8.6.0 on
// macOS. After GREASE is taken out (cipher 0x4a4a; extensions 0x4a4a and
// 0xeaea) its cipher suites, extensions and signature algorithms are
// exactly the spec's example, in another order, so JA4 and JA4_r must equal
// the published t13d1516h2_8daaf6152771_e5627efa2ab1 and its raw form.
func TestJA4SpecExample(t *testing.T) {
	s, err := Summarize(readSeed(t, "ja4/curl-8.6.0-macos.hex")[recordHeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	if s.JA4 != specJA4 {
		t.Errorf("JA4 %s, want %s", s.JA4, specJA4)
	}
	if s.JA4Raw != specJA4Raw {
		t.Errorf("JA4_r %s\nwant    %s", s.JA4Raw, specJA4Raw)
	}
	// The hello as sent: GREASE is there, and named so.
	if s.CipherSuiteNames[0] != "GREASE" || s.ExtensionNames[0] != "GREASE" || s.GroupNames[0] != "GREASE" {
		t.Errorf("GREASE not named: %v %v %v", s.CipherSuiteNames[:1], s.ExtensionNames[:1], s.GroupNames[:1])
	}
}

// TestJA4OpenSSL fingerprints a hello with 59 cipher suites, no ALPN and a
// pre_shared_key extension: OpenSSL's, from the same fingerproxy tests
// (TestPresharedKeyExtension), whose expected value is that
// implementation's. The derivation: TLS 1.3 in supported_versions, SNI
// present, 59 suites, 11 extensions, no ALPN ("00"); c hashes the nine
// extensions other than SNI and ALPN, sorted, then the 23 signature
// algorithms as sent.
func TestJA4OpenSSL(t *testing.T) {
	s, err := Summarize(readSeed(t, "ja4/openssl-psk.hex")[recordHeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	if want := "t13d591100_a33745022dd6_a11995863d32"; s.JA4 != want {
		t.Errorf("JA4 %s, want %s", s.JA4, want)
	}
	const c = "000a,000b,000d,0016,0017,0023,0029,002b,002d,0033_0403,0503,0603,0807,0808,0809,080a,080b,0804,0805,0806,0401,0501,0601,0303,0203,0301,0201,0302,0202,0402,0502,0602"
	if !strings.HasSuffix(s.JA4Raw, "_"+c) || !strings.HasPrefix(s.JA4Raw, "t13d591100_002f,0032,") {
		t.Errorf("JA4_r %s", s.JA4Raw)
	}
}

// TestJA4ProjectHellos pins the fingerprints of the hellos in testdata, so a
// change shows; and checks that tls_flags, being one more extension, changes
// only the extension count and the extension hash.
func TestJA4ProjectHellos(t *testing.T) {
	// Go 1.26's crypto/tls. Services that echo fingerprints report the same
	// value for Go 1.26 clients, from their own implementations.
	const goJA4 = "t13d1312h2_f57a46bbacb6_ab7e3b40a677"
	want := map[string]string{
		"crypto-tls.hex":          goJA4,
		"utls-noflags.hex":        goJA4, // tlsclient sends Go's hello
		"utls-flag80.hex":         "t13d1313h2_f57a46bbacb6_908c83a46a14",
		"utls-flags-8-12-170.hex": "t13d1313h2_f57a46bbacb6_908c83a46a14", // flags are data, not in JA4
		"utls-codepoint62.hex":    "t13d1313h2_f57a46bbacb6_715c63c95712",
	}
	raw := map[string]string{}
	for name, fp := range want {
		s, err := Summarize(readSeed(t, name)[recordHeaderLen:])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if s.JA4 != fp {
			t.Errorf("%s: JA4 %s, want %s (JA4_r %s)", name, s.JA4, fp, s.JA4Raw)
		}
		raw[name] = s.JA4Raw
	}

	// The flagged hello is the unflagged one with tls_flags added: one
	// more extension in a, the same b, and c with the codepoint inserted.
	base := strings.SplitN(raw["utls-noflags.hex"], "_", 4)
	if len(base) != 4 {
		t.Fatalf("JA4_r %s has no signature algorithms", raw["utls-noflags.hex"])
	}
	for name, cp := range map[string]string{"utls-flag80.hex": "fe01", "utls-codepoint62.hex": "003e"} {
		parts := strings.SplitN(raw[name], "_", 4)
		if len(parts) != 4 {
			t.Fatalf("%s: JA4_r %s", name, raw[name])
		}
		if parts[0] != strings.Replace(base[0], "1312", "1313", 1) || parts[1] != base[1] || parts[3] != base[3] {
			t.Errorf("%s differs from the unflagged hello beyond the extensions:\n%s\n%s", name, raw[name], raw["utls-noflags.hex"])
		}
		if got, want := parts[2], sortedHex(base[2]+","+cp); got != want {
			t.Errorf("%s: extensions %s, want %s", name, got, want)
		}
	}
}

// sortedHex sorts a comma-separated list of four-digit hex values.
func sortedHex(list string) string {
	l := strings.Split(list, ",")
	for i := range l {
		for j := i + 1; j < len(l); j++ {
			if l[j] < l[i] {
				l[i], l[j] = l[j], l[i]
			}
		}
	}
	return strings.Join(l, ",")
}

// ja4Hello builds a ClientHello message with the given legacy version,
// cipher suites and extensions; with noExts the extension block is left out,
// as hellos from before TLS 1.2 may do.
func ja4Hello(version uint16, suites []uint16, noExts bool, exts ...ext) []byte {
	var b cryptobyte.Builder
	b.AddUint8(typeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(version)
		b.AddBytes(make([]byte, 32))
		b.AddUint8(0) // session ID
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, s := range suites {
				b.AddUint16(s)
			}
		})
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		if noExts {
			return
		}
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, e := range exts {
				b.AddUint16(e.id)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.data) })
			}
		})
	})
	return b.BytesOrPanic()
}

// alpnExt is an ALPN extension offering protos.
func alpnExt(protos ...string) ext {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, p := range protos {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
		}
	})
	return ext{extALPN, b.BytesOrPanic()}
}

// u16Ext is an extension whose data is a list of 16-bit values with a
// length prefix of lenBytes bytes.
func u16Ext(id uint16, lenBytes int, vs ...uint16) ext {
	data := []byte{}
	if lenBytes == 2 {
		data = append(data, 0)
	}
	data = append(data, byte(2*len(vs)))
	for _, v := range vs {
		data = append(data, byte(v>>8), byte(v))
	}
	return ext{id, data}
}

// TestJA4Rules checks each rule of the specification on built hellos; the
// wanted values are worked out by hand from the rules, hashes aside.
func TestJA4Rules(t *testing.T) {
	sni := ext{extServerName, []byte{0, 6, 0, 0, 3, 'a', '.', 'b'}}
	sigs := u16Ext(extSignatureAlgorithms, 2, 0x0403, 0x0804)
	v13 := u16Ext(extSupportedVersions, 1, 0x0304, 0x0303)
	one := []uint16{0x1301}
	many := make([]uint16, 120)
	for i := range many {
		many[i] = uint16(0x0100 + i)
	}
	var lotsOfExts []ext
	for i := range 120 {
		lotsOfExts = append(lotsOfExts, ext{uint16(0x1000 + i), nil})
	}

	for _, c := range []struct {
		name    string
		msg     []byte
		a       string // JA4_a
		rawRest string // JA4_r after a, when checked
	}{
		{"spec order, with SNI", ja4Hello(0x0303, one, false, sni, v13, sigs), "t13d0103" + "00", "_1301_000d,002b_0403,0804"},
		{"no SNI", ja4Hello(0x0303, one, false, v13), "t13i010100", "_1301_002b"},
		{"no extensions: legacy version, empty c", ja4Hello(0x0301, []uint16{0x002f, 0x0035}, true), "t10i020000", "_002f,0035_"},
		{"only SNI and ALPN: counted, yet c is empty", ja4Hello(0x0303, one, false, sni, alpnExt("h2")), "t12d0102h2", "_1301_"},
		{"supported_versions wins over legacy_version", ja4Hello(0x0301, one, false, u16Ext(extSupportedVersions, 1, 0x0302, 0x0303)), "t12i010100", ""},
		{"highest version, GREASE ignored", ja4Hello(0x0303, one, false, u16Ext(extSupportedVersions, 1, 0x7a7a, 0x0303, 0x0304)), "t13i010100", ""},
		{"only GREASE versions", ja4Hello(0x0303, one, false, u16Ext(extSupportedVersions, 1, 0x7a7a)), "t00i010100", ""},
		{"SSL 3.0", ja4Hello(0x0300, one, true), "ts3i010000", ""},
		{"unknown version", ja4Hello(0x0305, one, true), "t00i010000", ""},
		{"GREASE left out of every count and list", ja4Hello(0x0303, []uint16{0x0a0a, 0x1301, 0xfafa}, false,
			ext{0x2a2a, nil}, v13, u16Ext(extSignatureAlgorithms, 2, 0x0a0a, 0x0403), ext{0xdada, []byte{0}}),
			"t13i010200", "_1301_000d,002b_0403"},
		{"counts stop at 99", ja4Hello(0x0303, many, false, lotsOfExts...), "t12i999900", ""},
		{"duplicate extensions count twice", ja4Hello(0x0303, one, false, ext{0x0017, nil}, ext{0x0017, nil}), "t12i010200", "_1301_0017,0017"},
		{"signature algorithms keep their order", ja4Hello(0x0303, one, false, u16Ext(extSignatureAlgorithms, 2, 0x0601, 0x0403, 0x0804)), "t12i010100", "_1301_000d_0601,0403,0804"},
		{"empty signature algorithms: no underscore", ja4Hello(0x0303, one, false, u16Ext(extSignatureAlgorithms, 2)), "t12i010100", "_1301_000d"},

		// ALPN: the spec's examples, then the edge cases it names.
		{"ALPN http/1.1", ja4Hello(0x0303, one, false, alpnExt("http/1.1", "h2")), "t12i0101h1", ""},
		{"ALPN 0xab", ja4Hello(0x0303, one, false, alpnExt("\xab")), "t12i0101ab", ""},
		{"ALPN 0xab 0xcd", ja4Hello(0x0303, one, false, alpnExt("\xab\xcd")), "t12i0101ad", ""},
		{"ALPN 0x30 0xab", ja4Hello(0x0303, one, false, alpnExt("0\xab")), "t12i01013b", ""},
		{"ALPN 0x30 0x31 0xab 0xcd", ja4Hello(0x0303, one, false, alpnExt("01\xab\xcd")), "t12i01013d", ""},
		{"ALPN 0x30 0xab 0xcd 0x31", ja4Hello(0x0303, one, false, alpnExt("0\xab\xcd1")), "t12i010101", ""},
		{"ALPN of one character", ja4Hello(0x0303, one, false, alpnExt("x")), "t12i0101xx", ""},
		{"ALPN keeps upper case", ja4Hello(0x0303, one, false, alpnExt("Ab")), "t12i0101Ab", ""},
		{"empty first ALPN", ja4Hello(0x0303, one, false, alpnExt("", "h2")), "t12i010100", ""},
		{"empty ALPN list", ja4Hello(0x0303, one, false, ext{extALPN, []byte{0, 0}}), "t12i010100", ""},
		{"malformed ALPN", ja4Hello(0x0303, one, false, ext{extALPN, []byte{0, 9, 2, 'h'}}), "t12i010100", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := Summarize(c.msg)
			if err != nil {
				t.Fatal(err)
			}
			a, rest, _ := strings.Cut(s.JA4Raw, "_")
			if a != c.a || !strings.HasPrefix(s.JA4, c.a+"_") {
				t.Errorf("JA4_a %s (JA4 %s), want %s", a, s.JA4, c.a)
			}
			if c.rawRest != "" && "_"+rest != c.rawRest {
				t.Errorf("JA4_r %s, want %s%s", s.JA4Raw, c.a, c.rawRest)
			}
			checkJA4(t, s)
		})
	}
}

// TestJA4Empty checks the spec's rule for empty lists: zeros, not the hash
// of an empty string.
func TestJA4Empty(t *testing.T) {
	s, err := Summarize(ja4Hello(0x0303, []uint16{0x0a0a}, true))
	if err != nil {
		t.Fatal(err)
	}
	if want := "t12i000000_000000000000_000000000000"; s.JA4 != want || s.JA4Raw != "t12i000000__" {
		t.Errorf("JA4 %s, JA4_r %s; want %s", s.JA4, s.JA4Raw, want)
	}
}
