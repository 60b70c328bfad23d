// Package certs makes the certificates request mTLS needs: a root CA, a
// server certificate and client certificates for automated clients, and
// loads and writes them as PEM files.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// An Authority is a CA that issues leaf certificates.
type Authority struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewKey returns a fresh ECDSA P-256 key.
func NewKey() (crypto.Signer, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// serial returns a random 128-bit serial number, positive as RFC 5280,
// Section 4.1.2.2 requires.
func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// subjectKeyID is the RFC 5280, Section 4.2.1.2 method (1) identifier: the
// SHA-1 of the subjectPublicKey bits.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}

// NewCA makes a self-signed root CA for key (a new P-256 key when nil),
// valid from notBefore to notAfter. The CA may sign leaves only
// (MaxPathLenZero). When rawSubject is not nil it is used byte for byte as
// the subject, so that a root can match another's exact encoding.
func NewCA(subject pkix.Name, rawSubject []byte, key crypto.Signer, notBefore, notAfter time.Time) (*Authority, error) {
	if key == nil {
		var err error
		if key, err = NewKey(); err != nil {
			return nil, err
		}
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               subject,
		RawSubject:            rawSubject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Authority{Cert: cert, Key: key}, nil
}

// DemoIssuer returns an Authority that issues certificates under the public
// request-mTLS demo's root: issuer exactly DemoRootSubject, signed by key,
// which must be RFC 9500's testRSA4096 for the demo server to accept them.
// There is no root certificate (Cert is a template holding the subject and
// the public key, never written anywhere), so nothing can come to trust one.
//
// Certificates it issues carry no authority key identifier: the demo root's
// subject key identifier is not published, and a wrong one would make
// verifiers that match the two (OpenSSL does) reject the chain; RFC 5280,
// Section 4.2.1.1 lets a verifier do without it.
func DemoIssuer(key crypto.Signer) *Authority {
	return &Authority{
		Cert: &x509.Certificate{RawSubject: DemoRootSubject, PublicKey: key.Public(),
			BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign},
		Key: key,
	}
}

// A Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	// DNSNames and IPs are the subject alternative names. Entries of Hosts
	// that parse as IP addresses go to IPs, the rest to DNSNames.
	Hosts []string
	// ExtKeyUsage is serverAuth or clientAuth (or none, or both).
	ExtKeyUsage []x509.ExtKeyUsage
	// IsCA issues a CA certificate instead of a leaf (for tests of
	// clients that misuse one).
	IsCA                bool
	NotBefore, NotAfter time.Time
	// Key is the leaf's key; a new P-256 key when nil.
	Key crypto.Signer
}

// Issue signs a certificate for l.
func (a *Authority) Issue(l Leaf) (*x509.Certificate, crypto.Signer, error) {
	key := l.Key
	if key == nil {
		var err error
		if key, err = NewKey(); err != nil {
			return nil, nil, err
		}
	}
	if !l.NotAfter.After(l.NotBefore) {
		return nil, nil, errors.New("issue certificate: validity ends before it starts")
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: l.CommonName},
		NotBefore:             l.NotBefore,
		NotAfter:              l.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           l.ExtKeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  l.IsCA,
	}
	if l.IsCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	for _, h := range l.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, key.Public(), a.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// TLS returns cert and key as a tls.Certificate, with the issuer's
// certificate left out (clients are configured with the root).
func TLS(cert *x509.Certificate, key crypto.Signer) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}
