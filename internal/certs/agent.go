package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
	"github.com/req-mtls/req-mtls/internal/safetext"
)

// CheckAgentURL reports whether u is fit to name a bot on both layers: an
// absolute https:// URL with a host, and nothing a comparison of URLs
// would have to normalise away (user information, a fragment, a query,
// upper-case letters in the scheme or host). A site compares the
// certificate's URI with its listed agent byte for byte, so the URL must be
// written the one way both sides write it.
func CheckAgentURL(u string) error {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Errorf("agent URL %q: %v", u, err)
	case p.Scheme != "https":
		return fmt.Errorf("agent URL %q: want an https:// URL (its directory is fetched from there)", u)
	case p.Host == "" || p.Hostname() == "":
		return fmt.Errorf("agent URL %q: no host", u)
	case p.User != nil:
		return fmt.Errorf("agent URL %q: user information has no place in an identity", u)
	case p.RawQuery != "" || p.ForceQuery || p.Fragment != "" || strings.Contains(u, "#"):
		return fmt.Errorf("agent URL %q: a query or fragment has no place in an identity", u)
	case !strings.HasPrefix(u, "https://"+strings.ToLower(p.Host)):
		return fmt.Errorf("agent URL %q: write the scheme and host in lower case, as sites list it", u)
	}
	return nil
}

// AgentOptions says what WriteAgent makes.
type AgentOptions struct {
	Dir string
	// URL is the agent's identity: the URL of its Web Bot Auth directory's
	// origin, as sites list it (-signature-agents). It becomes the
	// certificate's only subjectAltName, a URI (RFC 5280, Section 4.2.1.6).
	URL string
	// CA issues the certificate; nil makes it self-signed. Sites that trust
	// the agent trust the certificate by its key, listed in the agent's
	// directory, whoever issued it.
	CA *Authority
	// Force allows overwriting existing files.
	Force bool
	// Now is the start of validity (default time.Now()).
	Now time.Time
}

// agentValidity is a year: the certificate carries no trust of its own (its
// key does, through the directory), but a site still checks its dates, and
// a year keeps a forgotten file from working for ever.
const agentValidity = 365 * 24 * time.Hour

// WriteAgent writes agent.crt and agent.key (a new ECDSA P-256 key, mode
// 0600) into o.Dir: a client certificate (clientAuth) whose only name is
// the URI o.URL, self-signed unless o.CA issues it. It returns the paths
// written and the certificate.
func WriteAgent(o AgentOptions) ([]string, *x509.Certificate, error) {
	if err := CheckAgentURL(o.URL); err != nil {
		return nil, nil, err
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	crt, keyFile := filepath.Join(o.Dir, "agent.crt"), filepath.Join(o.Dir, "agent.key")
	if !o.Force {
		for _, p := range []string{crt, keyFile} {
			if _, err := os.Lstat(p); err == nil {
				return nil, nil, fmt.Errorf("%s exists; use -force to overwrite", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, nil, err
			}
		}
	}
	cert, key, err := IssueAgent(o.URL, o.CA, o.Now)
	if err != nil {
		return nil, nil, err
	}
	k, err := keyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, nil, err
	}
	if err := writeFileAtomic(keyFile, k, 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeFileAtomic(crt, certPEM(cert.Raw), 0o644); err != nil {
		return nil, nil, err
	}
	return []string{crt, keyFile}, cert, nil
}

// IssueAgent makes an agent certificate for agentURL with a new P-256 key,
// valid from an hour before now for a year (never past its issuer): issued
// by ca, or self-signed when ca is nil.
func IssueAgent(agentURL string, ca *Authority, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	if err := CheckAgentURL(agentURL); err != nil {
		return nil, nil, err
	}
	u, _ := url.Parse(agentURL)
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	nb := now.Add(-backdate)
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		// The subject carries nothing a site relies on; the host makes the
		// certificate recognisable in a listing.
		Subject:               pkix.Name{CommonName: u.Hostname()},
		NotBefore:             nb,
		NotAfter:              nb.Add(agentValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
	}
	parent, signer := tmpl, key
	if ca != nil {
		if err := checkAuthority(ca, now); err != nil {
			return nil, nil, err
		}
		if !ca.Cert.NotAfter.IsZero() && tmpl.NotAfter.After(ca.Cert.NotAfter) {
			tmpl.NotAfter = ca.Cert.NotAfter
		}
		parent, signer = ca.Cert, ca.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, nil, fmt.Errorf("issue agent certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// CertSHA256 is the hex SHA-256 of a certificate's DER, the form of a deny
// list's cert-sha256 lines (and of the access log's sha256).
func CertSHA256(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Describe returns a certificate's identifying lines for a person:
// subject and names, then the lines a deny list takes for it (cert-sha256,
// and for its key spki-sha256 and, for a key a directory can list, jwk).
func Describe(c *x509.Certificate) ([]string, error) {
	lines := []string{"# subject: " + safetext.Escape(c.Subject.String())}
	for _, u := range c.URIs {
		lines = append(lines, "# uri: "+safetext.Escape(u.String()))
	}
	for _, d := range c.DNSNames {
		lines = append(lines, "# dns: "+safetext.Escape(d))
	}
	keyLines, err := DescribeKey(c.PublicKey)
	if err != nil {
		return nil, err
	}
	return append(append(lines, "cert-sha256:"+CertSHA256(c)), keyLines...), nil
}

// DescribeKey returns the deny-list lines for a public key: spki-sha256
// (every certificate of the key) and, for an Ed25519 or P-256 key, jwk (its
// RFC 7638 thumbprint: a signing key's keyid, or the TLS key as the agent's
// directory lists it).
func DescribeKey(pub crypto.PublicKey) ([]string, error) {
	spki, err := SPKIHash(pub)
	if err != nil {
		return nil, err
	}
	lines := []string{"spki-sha256:" + spki}
	if tp, err := httpsig.ThumbprintOf(pub); err == nil {
		lines = append(lines, "jwk:"+tp)
	}
	return lines, nil
}

// DescribeFile returns Describe's lines for the certificate in name, or
// DescribeKey's for the key: a PEM certificate, private key or public key,
// or a JWK or JWKS (a signing key as gencert -signature-key writes it, or
// its .jwks), one block of lines per key.
func DescribeFile(name string) ([]string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("fingerprint: %w", err)
	}
	if block, _ := pem.Decode(data); block != nil {
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("fingerprint %q: %w", name, err)
			}
			return Describe(c)
		case "PUBLIC KEY":
			pub, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("fingerprint %q: %w", name, err)
			}
			return DescribeKey(pub)
		}
		key, err := LoadKey(name)
		if err != nil {
			return nil, fmt.Errorf("fingerprint: %w", err)
		}
		return DescribeKey(key.Public())
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("fingerprint %q: neither PEM nor JSON: %v", name, err)
	}
	if set.Keys == nil {
		set.Keys = []json.RawMessage{data}
	}
	var lines []string
	for i, raw := range set.Keys {
		pub, err := publicFromJWK(raw)
		if err != nil {
			return nil, fmt.Errorf("fingerprint %q: key %d: %v", name, i+1, err)
		}
		l, err := DescribeKey(pub)
		if err != nil {
			return nil, err
		}
		lines = append(lines, l...)
	}
	return lines, nil
}

// publicFromJWK reads the public part of an Ed25519 (OKP) or P-256 (EC)
// JWK.
func publicFromJWK(raw []byte) (crypto.PublicKey, error) {
	var k struct{ Kty, Crv, X, Y string }
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, err
	}
	b64 := base64.RawURLEncoding.DecodeString
	switch {
	case k.Kty == "OKP" && k.Crv == "Ed25519":
		x, err := b64(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("an Ed25519 JWK whose x is not 32 bytes of base64url")
		}
		return ed25519.PublicKey(x), nil
	case k.Kty == "EC" && k.Crv == "P-256":
		x, err1 := b64(k.X)
		y, err2 := b64(k.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return nil, errors.New("a P-256 JWK whose x or y is not 32 bytes of base64url")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("a P-256 JWK: %v", err)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("kty %q crv %q: want an OKP Ed25519 or EC P-256 key", k.Kty, k.Crv)
}
