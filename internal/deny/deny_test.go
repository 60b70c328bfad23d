package deny

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/certs"
)

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		{"NoKind", "abc", `line 1: "abc": want KIND:VALUE`},
		{"UnknownKind", "serial:01", `line 1: unknown kind "serial"`},
		{"ShortHex", "cert-sha256:abcd", `line 1: "abcd" is not a SHA-256 in hex`},
		{"NotHex", "spki-sha256:" + strings.Repeat("zz", 32), "is not a SHA-256 in hex"},
		{"PaddedThumbprint", "jwk:" + strings.Repeat("A", 43) + "=", "is not a JWK SHA-256 thumbprint"},
		{"ShortThumbprint", "jwk:AAAA", "is not a JWK SHA-256 thumbprint"},
		{"HTTPAgent", "agent:http://bot.example", `agent "http://bot.example" is not an https:// URL`},
		{"SecondLine", "# fine\n\ncert-sha256:" + strings.Repeat("ab", 32) + "\nbad", "line 4:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Parse(%q) = %v, want %q", tc.in, err, tc.err)
			}
		})
	}
}

func TestList(t *testing.T) {
	now := time.Now()
	denied, _, err := certs.IssueAgent("https://bot.example", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := certs.IssueAgent("https://other.example", nil, now)
	byAgent, _, _ := certs.IssueAgent("https://gone.example/agent", nil, now)
	spki := sha256.Sum256(other.RawSubjectPublicKeyInfo)
	third, _, _ := certs.IssueAgent("https://third.example", nil, now)
	l, err := Parse([]byte("# denied on 2026-12-07\n" +
		"cert-sha256:" + strings.ToUpper(certs.CertSHA256(denied)) + "  # upper case is fine\n" +
		"spki-sha256:" + hex.EncodeToString(spki[:]) + "\n" +
		"agent:https://gone.example/agent\n" +
		"jwk:" + strings.Repeat("A", 43) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 4 {
		t.Errorf("Len = %d, want 4", l.Len())
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"Cert", denied, "cert-sha256 listed"},
		{"Key", other, "spki-sha256 listed"},
		{"Agent", byAgent, "agent https://gone.example/agent listed"},
		{"NotListed", third, ""},
	} {
		if got := l.Certificate(tc.cert); got != tc.want {
			t.Errorf("%s: Certificate = %q, want %q", tc.name, got, tc.want)
		}
	}
	if !l.Key(strings.Repeat("A", 43)) || l.Key(strings.Repeat("B", 43)) {
		t.Error("Key: wrong answer")
	}
	if !l.Agent("https://gone.example/agent") || l.Agent("https://gone.example") {
		t.Error("Agent: wrong answer (URLs compare exactly)")
	}
	var none *List
	if none.Certificate(denied) != "" || none.Key("x") || none.Agent("x") {
		t.Error("a nil List denies")
	}
}
