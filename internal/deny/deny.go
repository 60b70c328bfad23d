// Package deny reads a site's deny list: identities refused on both layers
// of request mTLS without any CA's key. A line names one of
//
//	cert-sha256:HEX      a certificate, by the SHA-256 of its DER
//	spki-sha256:HEX      every certificate of one key, by the SHA-256 of
//	                     its DER SubjectPublicKeyInfo
//	jwk:THUMBPRINT       a key by its RFC 7638 JWK SHA-256 thumbprint
//	                     (base64url): a Web Bot Auth signing key (its keyid),
//	                     or a TLS key as an agent's directory lists it
//	agent:URL            an agent, on both layers: its signatures, and
//	                     certificates naming it (subjectAltName URI)
//
// with # starting a comment. gencert -fingerprint prints these lines for a
// certificate or key.
package deny

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// A List is a parsed deny list. The zero value and nil deny nothing. A
// List is immutable once made, safe for concurrent use.
type List struct {
	certs, spkis, jwks, agents map[string]bool
	n                          int
}

// Len is the number of entries.
func (l *List) Len() int {
	if l == nil {
		return 0
	}
	return l.n
}

// Load reads the deny list in file.
func Load(file string) (*List, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("deny list: %w", err)
	}
	l, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("deny list %q: %w", file, err)
	}
	return l, nil
}

// Parse reads a deny list's lines. An error names the line and why.
func Parse(data []byte) (*List, error) {
	l := &List{certs: map[string]bool{}, spkis: map[string]bool{}, jwks: map[string]bool{}, agents: map[string]bool{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<10)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		kind, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("line %d: %q: want KIND:VALUE (cert-sha256, spki-sha256, jwk or agent)", n, line)
		}
		var err error
		switch kind {
		case "cert-sha256":
			err = addHex(l.certs, v)
		case "spki-sha256":
			err = addHex(l.spkis, v)
		case "jwk":
			err = addThumbprint(l.jwks, v)
		case "agent":
			err = addAgent(l.agents, v)
		default:
			err = fmt.Errorf("unknown kind %q (want cert-sha256, spki-sha256, jwk or agent)", kind)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		l.n++
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return l, nil
}

func addHex(m map[string]bool, v string) error {
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != sha256.Size {
		return fmt.Errorf("%q is not a SHA-256 in hex (64 hex digits)", v)
	}
	m[hex.EncodeToString(b)] = true
	return nil
}

func addThumbprint(m map[string]bool, v string) error {
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) != sha256.Size {
		return fmt.Errorf("%q is not a JWK SHA-256 thumbprint (43 characters of unpadded base64url)", v)
	}
	m[v] = true
	return nil
}

func addAgent(m map[string]bool, v string) error {
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("agent %q is not an https:// URL", v)
	}
	m[v] = true
	return nil
}

// Certificate says why cert is denied, "" when it is not: its own hash,
// its key's, or an agent it names.
func (l *List) Certificate(cert *x509.Certificate) string {
	if l.Len() == 0 {
		return ""
	}
	sum := sha256.Sum256(cert.Raw)
	if l.certs[hex.EncodeToString(sum[:])] {
		return "cert-sha256 listed"
	}
	sum = sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	if l.spkis[hex.EncodeToString(sum[:])] {
		return "spki-sha256 listed"
	}
	for _, u := range cert.URIs {
		if l.agents[u.String()] {
			return "agent " + u.String() + " listed"
		}
	}
	return ""
}

// Key reports whether the key of this JWK thumbprint is denied.
func (l *List) Key(thumbprint string) bool { return l.Len() > 0 && l.jwks[thumbprint] }

// Agent reports whether the agent of this URL is denied.
func (l *List) Agent(agentURL string) bool { return l.Len() > 0 && l.agents[agentURL] }
