package clienthello

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	for _, c := range []struct {
		name func(uint16) string
		v    uint16
		want string
	}{
		{CipherSuiteName, 0x1301, "TLS_AES_128_GCM_SHA256"},
		{CipherSuiteName, 0x1303, "TLS_CHACHA20_POLY1305_SHA256"},
		{CipherSuiteName, 0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
		{CipherSuiteName, 0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"},
		{CipherSuiteName, 0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"},
		{CipherSuiteName, 0x00ff, "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"},
		{CipherSuiteName, 0x0a0a, "GREASE"},
		{CipherSuiteName, 0x1234, "0x1234"},
		{GroupName, 0x11ec, "X25519MLKEM768"},
		{GroupName, 0x11eb, "SecP256r1MLKEM768"},
		{GroupName, 0x11ed, "SecP384r1MLKEM1024"},
		{GroupName, 29, "x25519"},
		{GroupName, 23, "secp256r1"},
		{GroupName, 0x0100, "ffdhe2048"},
		{GroupName, 0xfafa, "GREASE"},
		{GroupName, 0xabcd, "0xabcd"},
		{SignatureSchemeName, 0x0403, "ecdsa_secp256r1_sha256"},
		{SignatureSchemeName, 0x0804, "rsa_pss_rsae_sha256"},
		{SignatureSchemeName, 0x0807, "ed25519"},
		{SignatureSchemeName, 0x0201, "rsa_pkcs1_sha1"},
		{SignatureSchemeName, 0x3a3a, "GREASE"},
		{SignatureSchemeName, 0x0000, "0x0000"},
		{ExtensionName, 0, "server_name"},
		{ExtensionName, 16, "application_layer_protocol_negotiation"},
		{ExtensionName, 43, "supported_versions"},
		{ExtensionName, 51, "key_share"},
		{ExtensionName, 0xfe01, "tls_flags"},
		{ExtensionName, 62, "tls_flags"},
		{ExtensionName, 0xfe0d, "encrypted_client_hello"},
		{ExtensionName, 0xff01, "renegotiation_info"},
		{ExtensionName, 0x4a4a, "GREASE"},
		{ExtensionName, 0xffce, "0xffce"},
		{VersionName, 0x0304, "TLS 1.3"},
		{VersionName, 0x0303, "TLS 1.2"},
		{VersionName, 0x0301, "TLS 1.0"},
		{VersionName, 0xdada, "GREASE"},
		{VersionName, 0x7f17, "0x7f17"},
	} {
		if got := c.name(c.v); got != c.want {
			t.Errorf("name of %#04x = %q, want %q", c.v, got, c.want)
		}
	}
}

// TestNameTables checks the tables themselves: no GREASE value, no empty
// name, no stray space.
func TestNameTables(t *testing.T) {
	for table, m := range map[string]map[uint16]string{
		"cipher suites": cipherSuiteNames, "groups": groupNames, "signature schemes": signatureSchemeNames,
		"extensions": extensionNames, "versions": versionNames,
	} {
		for v, name := range m {
			if isGREASE(v) || name == "" || strings.TrimSpace(name) != name || strings.HasPrefix(name, "0x") {
				t.Errorf("%s: %#04x = %q", table, v, name)
			}
		}
	}
	n := 0
	for v := range 1 << 16 {
		if isGREASE(uint16(v)) {
			n++
			if v&0xff != v>>8 || v&0x0f != 0x0a {
				t.Errorf("%#04x taken for GREASE", v)
			}
		}
	}
	if n != 16 {
		t.Errorf("%d GREASE values, want 16", n)
	}
}

// TestSummaryJSON checks that the JSON keeps its numeric fields as they were
// and adds the names beside them, for Go's hello and a flagged uTLS one.
func TestSummaryJSON(t *testing.T) {
	for _, name := range []string{"crypto-tls.hex", "utls-flag80.hex"} {
		t.Run(name, func(t *testing.T) {
			s, err := Summarize(readSeed(t, name)[recordHeaderLen:])
			if err != nil {
				t.Fatal(err)
			}
			checkSummary(t, s)
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			for numbers, names := range map[string]string{
				"supported_versions":   "supported_version_names",
				"cipher_suites":        "cipher_suite_names",
				"supported_groups":     "supported_group_names",
				"key_share_groups":     "key_share_group_names",
				"signature_algorithms": "signature_algorithm_names",
				"extensions":           "extension_names",
			} {
				nums, ok1 := got[numbers].([]any)
				strs, ok2 := got[names].([]any)
				if !ok1 || !ok2 || len(nums) == 0 || len(nums) != len(strs) {
					t.Errorf("%s / %s: %v / %v", numbers, names, got[numbers], got[names])
					continue
				}
				if _, ok := nums[0].(float64); !ok {
					t.Errorf("%s no longer numbers: %v", numbers, nums)
				}
			}
			if got["legacy_version"] != 771.0 || got["legacy_version_name"] != "TLS 1.2" {
				t.Errorf("legacy version %v %v", got["legacy_version"], got["legacy_version_name"])
			}
			if got["ja4"] != s.JA4 || got["ja4_r"] != s.JA4Raw {
				t.Errorf("ja4 %v, ja4_r %v", got["ja4"], got["ja4_r"])
			}

			wantGroups := []string{"X25519MLKEM768", "SecP256r1MLKEM768", "SecP384r1MLKEM1024", "x25519", "secp256r1", "secp384r1", "secp521r1"}
			if name != "crypto-tls.hex" {
				wantGroups = slices.Delete(wantGroups, 1, 3) // tlsclient leaves the two hybrids out
			}
			if !slices.Equal(s.GroupNames, wantGroups) {
				t.Errorf("groups %v, want %v", s.GroupNames, wantGroups)
			}
			if !slices.Equal(s.KeyShareNames, []string{"X25519MLKEM768", "x25519"}) {
				t.Errorf("key shares %v", s.KeyShareNames)
			}
			if !slices.Equal(s.VersionNames, []string{"TLS 1.3", "TLS 1.2"}) {
				t.Errorf("versions %v", s.VersionNames)
			}
			if !slices.Contains(s.CipherSuiteNames, "TLS_AES_128_GCM_SHA256") || !slices.Contains(s.SignatureAlgorithmNames, "ed25519") {
				t.Errorf("suites %v, signature algorithms %v", s.CipherSuiteNames, s.SignatureAlgorithmNames)
			}
			i := slices.Index(s.Extensions, 0xfe01)
			if (i >= 0) != (name == "utls-flag80.hex") || i >= 0 && s.ExtensionNames[i] != "tls_flags" {
				t.Errorf("tls_flags at %d in %v", i, s.ExtensionNames)
			}
		})
	}
}

// checkSummary checks what holds of every Summary: each list of names
// matches its list of numbers, no name is empty, and the JA4 fields are well
// formed.
func checkSummary(t *testing.T, s *Summary) {
	t.Helper()
	for _, l := range []struct {
		nums  []uint16
		names []string
		name  func(uint16) string
	}{
		{s.Versions, s.VersionNames, VersionName},
		{s.CipherSuites, s.CipherSuiteNames, CipherSuiteName},
		{s.Groups, s.GroupNames, GroupName},
		{s.KeyShares, s.KeyShareNames, GroupName},
		{s.SignatureAlgorithms, s.SignatureAlgorithmNames, SignatureSchemeName},
		{s.Extensions, s.ExtensionNames, ExtensionName},
		{[]uint16{s.LegacyVersion}, []string{s.LegacyVersionName}, VersionName},
	} {
		if len(l.nums) != len(l.names) || (l.nums == nil) != (l.names == nil) {
			t.Fatalf("%d numbers, %d names: %v %q", len(l.nums), len(l.names), l.nums, l.names)
		}
		for i, v := range l.nums {
			n := l.names[i]
			switch {
			case n == "" || n != l.name(v):
				t.Fatalf("%#04x named %q", v, n)
			case isGREASE(v) != (n == "GREASE"):
				t.Fatalf("%#04x named %q", v, n)
			case strings.HasPrefix(n, "0x"):
				if p, err := strconv.ParseUint(n[2:], 16, 16); err != nil || len(n) != 6 || uint16(p) != v {
					t.Fatalf("%#04x named %q", v, n)
				}
			}
		}
	}
	checkJA4(t, s)
}

// ja4Shape is the form of a JA4 fingerprint over TCP: version code, SNI
// mark, two counts, two ALPN characters, then two truncated hashes.
var ja4Shape = regexp.MustCompile(`^t(1[0-3]|s[1-3]|d[1-3]|00)[di]\d{4}[0-9A-Za-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}$`)

// checkJA4 checks the shape of JA4 and that it is JA4_r hashed.
func checkJA4(t *testing.T, s *Summary) {
	t.Helper()
	if !ja4Shape.MatchString(s.JA4) {
		t.Fatalf("JA4 %q is not of the form %s", s.JA4, ja4Shape)
	}
	fp := strings.Split(s.JA4, "_")
	raw := strings.SplitN(s.JA4Raw, "_", 3)
	if len(raw) != 3 || raw[0] != fp[0] {
		t.Fatalf("JA4_r %q does not go with JA4 %q", s.JA4Raw, s.JA4)
	}
	for i, part := range raw[1:] {
		want := ja4Empty
		if part != "" {
			want = hash12(part)
		}
		if fp[i+1] != want {
			t.Fatalf("JA4 %q is not JA4_r %q hashed", s.JA4, s.JA4Raw)
		}
	}
}
