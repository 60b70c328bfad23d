package auth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
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
	if len(chain) == 0 {
		return errors.New("no client certificate")
	}
	if roots == nil {
		return errors.New("no trust store for client certificates")
	}
	leaf := chain[0]
	if leaf.IsCA {
		return errors.New("client certificate is a CA certificate")
	}
	if len(leaf.DNSNames) == 0 {
		return errors.New("client certificate has no DNS name")
	}
	if slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		// anyExtendedKeyUsage would let x509.Verify pass it for any
		// purpose; a bot certificate must say clientAuth itself.
		return errors.New("client certificate has the anyExtendedKeyUsage extended key usage; clientAuth must be explicit")
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return errors.New("client certificate lacks the clientAuth extended key usage")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err
}

// CertName is how a client certificate is named in reports, logs and
// errors: its first DNS name, escaped, since its maker chose it.
func CertName(leaf *x509.Certificate) string {
	if len(leaf.DNSNames) == 0 {
		return "(no DNS name)"
	}
	return safetext.Escape(leaf.DNSNames[0])
}
