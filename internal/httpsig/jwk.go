package httpsig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
)

// PublicJWK returns pub as a public JWK (RFC 7517) holding exactly the
// members RFC 7638, Section 3.2 requires, in the lexicographic order of
// their names and without white space: the JSON whose SHA-256 is the key's
// thumbprint, and a key a directory can list as it is. Ed25519 is an OKP
// key (RFC 8037, Section 2), P-256 an EC key with 32-byte coordinates (RFC
// 7518, Section 6.2.1).
func PublicJWK(pub crypto.PublicKey) (string, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return `{"crv":"Ed25519","kty":"OKP","x":"` + b64(k) + `"}`, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("jwk: an ECDSA key on %s, want P-256", k.Curve.Params().Name)
		}
		raw, err := k.Bytes() // 04 || x || y, 32 bytes each
		if err != nil {
			return "", fmt.Errorf("jwk: %v", err)
		}
		return `{"crv":"P-256","kty":"EC","x":"` + b64(raw[1:33]) + `","y":"` + b64(raw[33:]) + `"}`, nil
	}
	return "", fmt.Errorf("jwk: a %T key, want Ed25519 or ECDSA P-256", pub)
}

// ThumbprintOf returns the RFC 7638 JWK SHA-256 thumbprint of pub,
// base64url without padding: Web Bot Auth's keyid, and a deny list's jwk:
// entries.
func ThumbprintOf(pub crypto.PublicKey) (string, error) {
	j, err := PublicJWK(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(j))
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// LoadDirectoryKey reads a key a Web Bot Auth directory lists and signs
// with: an Ed25519 signing key as LoadSigningKey reads it, or an ECDSA
// P-256 key in PEM (PKCS #8 or SEC 1), the key of an agent's TLS client
// certificate (gencert -agent writes agent.key so).
func LoadDirectoryKey(file string) (crypto.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("directory key: %w", err)
	}
	if b, _ := pem.Decode(data); b != nil && (b.Type == "EC PRIVATE KEY" || b.Type == "PRIVATE KEY") {
		var k any
		if b.Type == "EC PRIVATE KEY" {
			k, err = x509.ParseECPrivateKey(b.Bytes)
		} else {
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("directory key %q: %w", file, err)
		}
		switch k := k.(type) {
		case ed25519.PrivateKey:
			return k, nil
		case *ecdsa.PrivateKey:
			if k.Curve == elliptic.P256() {
				return k, nil
			}
		}
		return nil, fmt.Errorf("directory key %q: a %T, want Ed25519 or ECDSA P-256", file, k)
	}
	return LoadSigningKey(file)
}
