package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/req-mtls/req-mtls/internal/safetext"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
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
	// userOnly: the CRL lists end-entity certificates only (its Issuing
	// Distribution Point says onlyContainsUserCerts), so it says nothing
	// of the CA certificates its issuer signed.
	userOnly bool
}

// The CRL extensions that bear on how a CRL is used (RFC 5280, Section 5.2).
var (
	oidDeltaCRLIndicator = asn1.ObjectIdentifier{2, 5, 29, 27} // Section 5.2.4
	oidIssuingDistPoint  = asn1.ObjectIdentifier{2, 5, 29, 28} // Section 5.2.5
)

// crlScope refuses a CRL that carries a critical extension, or an entry
// with a critical extension, that is not processed here: RFC 5280, Section
// 5.2 (and 5.3 for entries) forbids using such a CRL to decide a
// certificate's status. A CRL read here is taken as the complete list of
// its issuer's revocations, so a delta CRL (Section 5.2.4, which lists
// only what changed since its base) is refused, and so is an Issuing
// Distribution Point that narrows the list to CA certificates, some
// reasons, attribute certificates or other issuers' certificates (Section
// 5.2.5). Of that extension, the distribution point's name (where the
// list is published) and onlyContainsUserCerts are processed; the second
// is returned, and such a list is not applied to CA certificates.
func crlScope(rl *x509.RevocationList) (userOnly bool, err error) {
	for _, e := range rl.Extensions {
		switch {
		case e.Id.Equal(oidDeltaCRLIndicator):
			// Always critical (Section 5.2.4); refused whatever it says.
			return false, errors.New("a delta CRL (Delta CRL Indicator extension)")
		case e.Id.Equal(oidIssuingDistPoint):
			if userOnly, err = parseIssuingDistPoint(e.Value); err != nil {
				return false, err
			}
		case e.Critical:
			// crypto/x509 parses the authority key identifier and
			// the CRL number, which are never critical (Sections
			// 5.2.1 and 5.2.3); any other critical one is unknown.
			return false, fmt.Errorf("critical extension %s, not processed", e.Id)
		}
	}
	for _, r := range rl.RevokedCertificateEntries {
		for _, e := range r.Extensions {
			// Section 5.3: the reason code and the invalidity date are
			// never critical; the certificate issuer (5.3.3), of
			// indirect CRLs, always is.
			if e.Critical {
				return false, fmt.Errorf("critical extension %s of entry %s, not processed", e.Id, r.SerialNumber.Text(16))
			}
		}
	}
	return userOnly, nil
}

// parseIssuingDistPoint reads the Issuing Distribution Point extension
// (RFC 5280, Section 5.2.5, tagged implicitly):
//
//	IssuingDistributionPoint ::= SEQUENCE {
//	     distributionPoint          [0] DistributionPointName OPTIONAL,
//	     onlyContainsUserCerts      [1] BOOLEAN DEFAULT FALSE,
//	     onlyContainsCACerts        [2] BOOLEAN DEFAULT FALSE,
//	     onlySomeReasons            [3] ReasonFlags OPTIONAL,
//	     indirectCRL                [4] BOOLEAN DEFAULT FALSE,
//	     onlyContainsAttributeCerts [5] BOOLEAN DEFAULT FALSE }
//
// and refuses the fields that narrow the list in ways not processed here.
func parseIssuingDistPoint(der []byte) (userOnly bool, err error) {
	input := cryptobyte.String(der)
	var idp cryptobyte.String
	if !input.ReadASN1(&idp, cbasn1.SEQUENCE) || !input.Empty() {
		return false, errors.New("malformed Issuing Distribution Point extension")
	}
	// DistributionPointName is a CHOICE, so its implicit tag is explicit.
	if !idp.SkipOptionalASN1(cbasn1.Tag(0).ContextSpecific().Constructed()) {
		return false, errors.New("malformed Issuing Distribution Point extension")
	}
	flag := func(n int) (bool, error) {
		var v cryptobyte.String
		var present bool
		if !idp.ReadOptionalASN1(&v, &present, cbasn1.Tag(n).ContextSpecific()) {
			return false, errors.New("malformed Issuing Distribution Point extension")
		}
		if !present {
			return false, nil
		}
		if n == 3 { // onlySomeReasons, a BIT STRING: present is enough
			return true, nil
		}
		if len(v) != 1 || (v[0] != 0 && v[0] != 0xff) {
			return false, errors.New("malformed Issuing Distribution Point extension: a boolean that is neither true nor false")
		}
		return v[0] == 0xff, nil
	}
	names := []string{1: "onlyContainsUserCerts", "onlyContainsCACerts", "onlySomeReasons", "indirectCRL", "onlyContainsAttributeCerts"}
	for n := 1; n <= 5; n++ {
		set, err := flag(n)
		if err != nil {
			return false, err
		}
		switch {
		case n == 1:
			userOnly = set
		case set:
			return false, fmt.Errorf("an Issuing Distribution Point with %s", names[n])
		}
	}
	if !idp.Empty() {
		return false, errors.New("malformed Issuing Distribution Point extension: trailing data")
	}
	return userOnly, nil
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
		userOnly, err := crlScope(rl)
		if err != nil {
			return nil, fmt.Errorf("load CRL file %q: CRL %d (issuer %s): %v; such a CRL must not be used (RFC 5280, Section 5.2)",
				file, i+1, safetext.Escape(rl.Issuer.String()), err)
		}
		issuer := crlIssuer(rl, stores)
		if issuer == nil {
			return nil, fmt.Errorf("load CRL file %q: CRL %d (issuer %s) is not signed by a CA of the client or bot store",
				file, i+1, safetext.Escape(rl.Issuer.String()))
		}
		if _, dup := set.byIssuer[caKey(issuer)]; dup {
			return nil, fmt.Errorf("load CRL file %q: CRL %d: a second CRL of %s", file, i+1, safetext.Escape(issuer.Subject.String()))
		}
		c := &crl{issuer: issuer, revoked: map[string]bool{}, thisUpdate: rl.ThisUpdate, nextUpdate: rl.NextUpdate, userOnly: userOnly}
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

// check says whether a verified path (leaf first, trust anchor last)
// stands under the CRLs at now: every certificate whose issuer has a CRL,
// the anchor too when it is an intermediate, must not be listed, and that
// CRL must not be past its nextUpdate. It also returns
// the earliest nextUpdate it relied on (zero for none), after which the
// answer must be asked again.
func (set *crlSet) check(path []*x509.Certificate, now time.Time, log func(msg string, args ...any)) (time.Time, error) {
	var until time.Time
	if set == nil {
		return until, nil
	}
	for i, cert := range path {
		c := set.issuerCRL(path, i)
		if c == nil || (c.userOnly && cert.IsCA) {
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

// issuerCRL returns the CRL of the issuer of path[i], or nil. The issuer is
// the next certificate of the path; for the last, the trust anchor, it is
// the CA of a CRL that signed it, when the anchor is not a root: a CA
// bundle may hold intermediates beside their root, and a path then ends
// at the intermediate, which the root's CRL may list.
func (set *crlSet) issuerCRL(path []*x509.Certificate, i int) *crl {
	if i+1 < len(path) {
		return set.byIssuer[caKey(path[i+1])]
	}
	anchor := path[i]
	for _, c := range set.list {
		if bytes.Equal(c.issuer.RawSubject, anchor.RawIssuer) && caKey(c.issuer) != caKey(anchor) &&
			anchor.CheckSignatureFrom(c.issuer) == nil {
			return c
		}
	}
	return nil
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
