package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/req-mtls/req-mtls/internal/safetext"
)

// ErrRevoked and ErrCRLExpired are why a certificate does not validate
// under a CRL (RFC 5280, Section 5): it is listed, or the CRL of its
// issuer is past its nextUpdate, when its status is unknown and, as nginx
// and OpenSSL do, the certificate is refused.
var (
	ErrRevoked    = errors.New("revoked")
	ErrCRLExpired = errors.New("crl expired")
)

// A crlSet is the certificate revocation lists in force, by the CA that
// signed each (a root of the client or bot store).
type crlSet struct {
	byIssuer map[string]*crl // by caKey of the issuing CA
	list     []*crl
	digest   [32]byte // the lists' DER, in the file's order
}

type crl struct {
	issuer     *x509.Certificate
	revoked    map[string]bool // serial numbers, in decimal
	thisUpdate time.Time
	nextUpdate time.Time // zero when the CRL names none
	staleOnce  sync.Once // the first refusal for staleness is logged
}

// CRLInfo describes one CRL in force, for metrics.
type CRLInfo struct {
	Issuer     string // the issuing CA's subject, escaped
	NextUpdate time.Time
	Revoked    int
}

// loadCRLs reads file, one or more CRLs in PEM ("X509 CRL" blocks) or one
// in DER, and checks that each is signed by a root of one of stores.
func loadCRLs(file string, stores ...*store) (*crlSet, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load CRL file: %w", err)
	}
	var ders [][]byte
	if bytes.Contains(data, []byte("-----BEGIN")) {
		for rest := data; ; {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "X509 CRL" {
				return nil, fmt.Errorf("load CRL file %q: a %q PEM block; want X509 CRL", file, b.Type)
			}
			ders = append(ders, b.Bytes)
		}
	} else if len(data) > 0 {
		ders = [][]byte{data}
	}
	if len(ders) == 0 {
		return nil, fmt.Errorf("load CRL file %q: no CRL found", file)
	}
	set := &crlSet{byIssuer: map[string]*crl{}}
	h := sha256.New()
	for i, der := range ders {
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("load CRL file %q: CRL %d: %v", file, i+1, err)
		}
		issuer := crlIssuer(rl, stores)
		if issuer == nil {
			return nil, fmt.Errorf("load CRL file %q: CRL %d (issuer %s) is not signed by a CA of the client or bot store",
				file, i+1, safetext.Escape(rl.Issuer.String()))
		}
		if _, dup := set.byIssuer[caKey(issuer)]; dup {
			return nil, fmt.Errorf("load CRL file %q: CRL %d: a second CRL of %s", file, i+1, safetext.Escape(issuer.Subject.String()))
		}
		c := &crl{issuer: issuer, revoked: map[string]bool{}, thisUpdate: rl.ThisUpdate, nextUpdate: rl.NextUpdate}
		for _, e := range rl.RevokedCertificateEntries {
			c.revoked[e.SerialNumber.String()] = true
		}
		set.byIssuer[caKey(issuer)] = c
		set.list = append(set.list, c)
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(der))))
		h.Write(der)
	}
	h.Sum(set.digest[:0])
	return set, nil
}

// caKey identifies a CA by its subject and key, so that a CRL keeps
// applying to a root that is issued again with the same name and key.
func caKey(ca *x509.Certificate) string {
	return string(ca.RawSubject) + "\x00" + string(ca.RawSubjectPublicKeyInfo)
}

// crlIssuer returns the root of stores that signed rl, or nil.
func crlIssuer(rl *x509.RevocationList, stores []*store) *x509.Certificate {
	for _, s := range stores {
		if s == nil {
			continue
		}
		for _, ca := range s.certs {
			if bytes.Equal(ca.RawSubject, rl.RawIssuer) && rl.CheckSignatureFrom(ca) == nil {
				return ca
			}
		}
	}
	return nil
}

// check says whether a verified path (leaf first, root last) stands under
// the CRLs at now: every certificate whose issuer has a CRL must not be
// listed, and that CRL must not be past its nextUpdate. It also returns
// the earliest nextUpdate it relied on (zero for none), after which the
// answer must be asked again.
func (set *crlSet) check(path []*x509.Certificate, now time.Time, log func(msg string, args ...any)) (time.Time, error) {
	var until time.Time
	if set == nil {
		return until, nil
	}
	for i := 0; i+1 < len(path); i++ {
		c := set.byIssuer[caKey(path[i+1])]
		if c == nil {
			continue
		}
		if !c.nextUpdate.IsZero() {
			if now.After(c.nextUpdate) {
				c.staleOnce.Do(func() {
					log("CRL expired: certificates of its issuer do not validate until a newer CRL is loaded",
						"issuer", safetext.Escape(c.issuer.Subject.String()), "next_update", c.nextUpdate.UTC().Format(time.RFC3339))
				})
				return until, fmt.Errorf("%w: the CRL of %s was due at %s", ErrCRLExpired, safetext.Escape(c.issuer.Subject.String()), c.nextUpdate.UTC().Format(time.RFC3339))
			}
			if until.IsZero() || c.nextUpdate.Before(until) {
				until = c.nextUpdate
			}
		}
		if c.revoked[path[i].SerialNumber.String()] {
			return until, fmt.Errorf("%w: serial %s is in the CRL of %s", ErrRevoked, path[i].SerialNumber.Text(16), safetext.Escape(c.issuer.Subject.String()))
		}
	}
	return until, nil
}

// info describes the CRLs in force.
func (set *crlSet) info() []CRLInfo {
	if set == nil {
		return nil
	}
	out := make([]CRLInfo, len(set.list))
	for i, c := range set.list {
		out[i] = CRLInfo{Issuer: safetext.Escape(c.issuer.Subject.String()), NextUpdate: c.nextUpdate, Revoked: len(c.revoked)}
	}
	return out
}

// earliestNext returns the earliest nextUpdate still to come of the CRLs,
// if any has one.
func (set *crlSet) earliestNext() (time.Time, bool) {
	var t time.Time
	if set == nil {
		return t, false
	}
	for _, c := range set.list {
		if !c.nextUpdate.IsZero() && (t.IsZero() || c.nextUpdate.Before(t)) {
			t = c.nextUpdate
		}
	}
	return t, !t.IsZero()
}
