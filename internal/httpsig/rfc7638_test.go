package httpsig

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// canonicalThumbprint is RFC 7638, Section 3 from its text: the required
// members only, their names in lexicographic order, no white space, then
// SHA-256, base64url without padding.
func canonicalThumbprint(t *testing.T, members map[string]string) string {
	t.Helper()
	names := make([]string, 0, len(members))
	for n := range members {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		k, _ := json.Marshal(n)
		v, _ := json.Marshal(members[n])
		parts[i] = string(k) + ":" + string(v)
	}
	sum := sha256.Sum256([]byte("{" + strings.Join(parts, ",") + "}"))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestRFC7638Thumbprint: RFC 7638, Section 3.1, the thumbprint of its
// example RSA key, computed by the rule above; and Thumbprint and
// ThumbprintOf give, for Ed25519 keys (RFC 9421's test-key-ed25519, RFC
// 8037's example) and a P-256 key (test-key-ecc-p256), what the same rule
// gives over their required members (RFC 8037, Section 2; RFC 7518,
// Section 6.2.1).
func TestRFC7638Thumbprint(t *testing.T) {
	const n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	if got, want := canonicalThumbprint(t, map[string]string{"kty": "RSA", "n": n, "e": "AQAB"}), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("RFC 7638 example: %s, want %s", got, want)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	x8037, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	for _, pub := range []ed25519.PublicKey{rfcPub, x8037} {
		want := canonicalThumbprint(t, map[string]string{"kty": "OKP", "crv": "Ed25519", "x": b64(pub)})
		if got := Thumbprint(pub); got != want {
			t.Errorf("Thumbprint(%x) = %s, want %s", []byte(pub), got, want)
		}
		if got, err := ThumbprintOf(pub); err != nil || got != want {
			t.Errorf("ThumbprintOf(%x) = %s, %v; want %s", []byte(pub), got, err, want)
		}
	}
	// RFC 9421's test-key-ecc-p256 (RFC 7518, Section 6.2.1: EC members).
	ec := rfcPublicKey(t, rfcP256Public).(*ecdsa.PublicKey)
	raw, err := ec.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := canonicalThumbprint(t, map[string]string{"kty": "EC", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])})
	if got, err := ThumbprintOf(ec); err != nil || got != want {
		t.Errorf("ThumbprintOf(test-key-ecc-p256) = %s, %v; want %s", got, err, want)
	}
}
