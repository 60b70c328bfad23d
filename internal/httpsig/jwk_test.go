package httpsig

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestThumbprintOfMatchesThumbprint(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ThumbprintOf(pub)
	if err != nil {
		t.Fatal(err)
	}
	if want := Thumbprint(pub); got != want {
		t.Errorf("ThumbprintOf = %s, Thumbprint = %s", got, want)
	}
}

// RFC 8037, Appendix A.3: the thumbprint of the Ed25519 key of A.2.
func TestThumbprintOfRFC8037(t *testing.T) {
	x := "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	pub := mustB64(t, x)
	got, err := ThumbprintOf(ed25519.PublicKey(pub))
	if err != nil {
		t.Fatal(err)
	}
	if want := "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Errorf("thumbprint = %s, want %s", got, want)
	}
}

func TestPublicJWKP256(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	j, err := PublicJWK(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(j, `{"crv":"P-256","kty":"EC","x":"`) || len(j) != len(`{"crv":"P-256","kty":"EC","x":"","y":""}`)+2*43 {
		t.Errorf("JWK = %s", j)
	}
	for _, bad := range []any{&rsa.PublicKey{}, mustP384(t)} {
		if _, err := PublicJWK(bad); err == nil {
			t.Errorf("PublicJWK(%T) gave no error", bad)
		}
	}
}

func mustP384(t *testing.T) *ecdsa.PublicKey {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A P-256 key signs with ecdsa-p256-sha256 as RFC 9421, Section 3.3.4 says
// (r and s as 32 bytes each), and Verify accepts it; the same base under
// another key does not verify.
func TestSignP256(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest("GET", "https://site.example/a", nil)
	p := Params{Created: time.Now(), Expires: time.Now().Add(time.Minute), Alg: "ecdsa-p256-sha256"}
	if err := Sign(r, "sig1", NewCovered([]string{"@authority"}, p), k); err != nil {
		t.Fatal(err)
	}
	sigs, err := Parse(r.Header)
	if err != nil {
		t.Fatal(err)
	}
	s := sigs["sig1"]
	if s == nil || len(s.Value) != 64 {
		t.Fatalf("signature %+v, want 64 bytes", s)
	}
	if err := Verify(r, s, &k.PublicKey); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := Verify(r, s, mustP256(t)); err == nil {
		t.Error("verified under another key")
	}
	if err := Sign(r, "sig2", NewCovered([]string{"@authority"}, p), mustP384Key(t)); err == nil || !strings.Contains(err.Error(), "want Ed25519 or ECDSA P-256") {
		t.Errorf("Sign with a P-384 key: %v", err)
	}
}

func mustP256(t *testing.T) *ecdsa.PublicKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

func mustP384Key(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
