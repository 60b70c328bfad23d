package auth

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/req-mtls/req-mtls/internal/safetext"
)

// Policy says when the server asks for a client certificate and what it
// does with one.
type Policy int

const (
	// PolicyRequest asks flagged clients for a certificate and reports in
	// /debug whether it validates, as the reference server does.
	PolicyRequest Policy = iota
	// PolicyVerify asks flagged clients; a certificate that does not
	// validate fails the handshake. No certificate is allowed.
	PolicyVerify
	// PolicyRequire asks flagged clients, who must present a valid
	// certificate (certificate_required in TLS 1.3 otherwise).
	PolicyRequire
	// PolicyAlways is classic mTLS: every client must present a valid
	// certificate, flag or not.
	PolicyAlways
)

var policyNames = []string{"request", "verify", "require", "always"}

// ParsePolicy parses a -client-auth value.
func ParsePolicy(s string) (Policy, error) {
	if i := slices.Index(policyNames, s); i >= 0 {
		return Policy(i), nil
	}
	return 0, fmt.Errorf("unknown client-auth policy %q (want request, verify, require or always)", s)
}

func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// asks reports whether a CertificateRequest is sent to a client.
func (p Policy) asks(flagged bool) bool { return flagged || p == PolicyAlways }

// enforces reports whether a certificate that is sent must validate.
func (p Policy) enforces() bool { return p != PolicyRequest }

// requires reports whether the client must send a certificate.
func (p Policy) requires(flagged bool) bool {
	return p == PolicyAlways || (flagged && p == PolicyRequire)
}

// ValidateClientCert decides whether a client certificate chain is valid for
// the trust store roots at time now. It is the only place that does: the
// handshake policies and the /debug report both call it.
//
// The leaf must not be a CA, must carry a DNS name and the clientAuth
// extended key usage explicitly (a leaf without the extension, or with
// anyExtendedKeyUsage, is not taken to allow it), and must chain to roots through the intermediates
// the client sent, within every certificate's validity.
func ValidateClientCert(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	_, err := validate(chain, roots, now)
	return err
}

// validate is ValidateClientCert, returning the path it verified (leaf
// first, root last) and the window of time in which it stays valid.
func validate(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) (window, error) {
	if len(chain) == 0 {
		return window{}, errors.New("no client certificate")
	}
	if roots == nil {
		return window{}, errors.New("no trust store for client certificates")
	}
	leaf := chain[0]
	if leaf.IsCA {
		return window{}, errors.New("client certificate is a CA certificate")
	}
	if len(leaf.DNSNames) == 0 {
		return window{}, errors.New("client certificate has no DNS name")
	}
	if slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		// anyExtendedKeyUsage would let x509.Verify pass it for any
		// purpose; a bot certificate must say clientAuth itself.
		return window{}, errors.New("client certificate has the anyExtendedKeyUsage extended key usage; clientAuth must be explicit")
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return window{}, errors.New("client certificate lacks the clientAuth extended key usage")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return window{}, err
	}
	w := window{until: chains[0][0].NotAfter, from: chains[0][0].NotBefore, path: chains[0]}
	for _, c := range chains[0][1:] {
		w.from = later(w.from, c.NotBefore)
		w.until = earlier(w.until, c.NotAfter)
	}
	return w, nil
}

// window is a verified path and when it is valid: from its latest
// NotBefore to its earliest NotAfter.
type window struct {
	from, until time.Time
	path        []*x509.Certificate
}

func (w window) contains(t time.Time) bool { return !t.Before(w.from) && !t.After(w.until) }

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// verifyCache remembers chains that validated, keyed by the trust store's
// contents and the chain's bytes, with the window in which the verified
// path stays valid: a bot that reconnects with the same certificate is
// not verified again (path building and signature checks are about an
// eighth of a full handshake's CPU). Everything validation depends on is
// in the key (the certificates, the roots) or checked on each use (the
// time); failures are not remembered.
type verifyCache struct {
	mu  sync.Mutex
	m   map[[32]byte]window
	log func(msg string, args ...any) // says loudly that a CRL went stale
}

// verifyCacheSize bounds the cache; when full it starts over.
const verifyCacheSize = 4096

// validate validates chain against s and the CRLs at now and returns the
// verified path, leaf first and root last: the certificates that validated
// the leaf, which are not always those the client sent.
func (vc *verifyCache) validate(chain []*x509.Certificate, s *store, crls *crlSet, now time.Time) ([]*x509.Certificate, error) {
	if s == nil || len(chain) == 0 {
		return nil, ValidateClientCert(chain, s.roots(), now)
	}
	h := sha256.New()
	h.Write(s.digest[:])
	if crls != nil {
		h.Write(crls.digest[:])
	}
	for _, c := range chain {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(c.Raw))))
		h.Write(c.Raw)
	}
	var key [32]byte
	h.Sum(key[:0])
	vc.mu.Lock()
	w, ok := vc.m[key]
	vc.mu.Unlock()
	if ok && w.contains(now) {
		return w.path, nil
	}
	w, err := validate(chain, s.pool, now)
	if err != nil {
		return nil, err
	}
	// The CRLs: a listed certificate, or a CRL past its nextUpdate,
	// does not validate; one that stands does until that nextUpdate.
	until, err := crls.check(w.path, now, vc.log)
	if err != nil {
		return nil, err
	}
	if !until.IsZero() {
		w.until = earlier(w.until, until)
	}
	vc.mu.Lock()
	if vc.m == nil || len(vc.m) >= verifyCacheSize {
		vc.m = make(map[[32]byte]window)
	}
	vc.m[key] = w
	vc.mu.Unlock()
	return w.path, nil
}

// CertName is how a client certificate is named in reports, logs and
// errors: its first DNS name, or without one its first URI (an agent's
// certificate), escaped, since its maker chose it.
func CertName(leaf *x509.Certificate) string {
	if len(leaf.DNSNames) == 0 {
		if len(leaf.URIs) > 0 {
			return safetext.Escape(leaf.URIs[0].String())
		}
		return "(no DNS name)"
	}
	return safetext.Escape(leaf.DNSNames[0])
}
