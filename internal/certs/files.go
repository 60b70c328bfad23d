package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/req-mtls/req-mtls/internal/safetext"
)

// DemoRootSubject is the DER subject of the public request-mTLS demo's root,
// C=US, ST=California, L=San Francisco, O=ACME Ltd, OU=ACME, with C as a
// PrintableString and the rest as UTF8String. Client certificates chain to
// that root only if their issuer is exactly these bytes.
var DemoRootSubject = mustHex("305c310b30090603550406130255533113301106035504080c0a43616c69666f726e69613116301406035504070c0d53616e204672616e636973636f3111300f060355040a0c0841434d45204c7464310d300b060355040b0c0441434d45")

// TestRSA4096SPKISHA256 is the SHA-256 of the DER SubjectPublicKeyInfo of
// RFC 9500's testRSA4096 key (RFC 9500, Section 2.1), the key of the public
// demo's root. It recognises the key; the key itself is never shipped here.
const TestRSA4096SPKISHA256 = "96465ea5dc9bb2da7b351d808a7196e5761f2412a5040131c68d719aaba28fb9"

// demoKeyHash is TestRSA4096SPKISHA256; tests point it at a key of their own.
var demoKeyHash = TestRSA4096SPKISHA256

// ChainsToDemoRoot reports whether cert was issued under the public demo's
// root subject (its issuer is exactly DemoRootSubject). It does not check the
// signature: that takes the demo's root certificate.
func ChainsToDemoRoot(cert *x509.Certificate) bool {
	return string(cert.RawIssuer) == string(DemoRootSubject)
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// SPKIHash returns the hex SHA-256 of pub's DER SubjectPublicKeyInfo.
func SPKIHash(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// LoadKey reads a private key from a PEM file: PKCS#8 ("PRIVATE KEY"),
// PKCS#1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
func LoadKey(name string) (crypto.Signer, error) {
	block, err := readPEM(name, "key")
	if err != nil {
		return nil, err
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("load key %q: PEM block is %q, not a private key", name, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("load key %q: %w", name, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		return k.(crypto.Signer), nil
	}
	return nil, fmt.Errorf("load key %q: unsupported key type %T", name, key)
}

// Options says what WriteSet makes.
type Options struct {
	Dir string
	// Hosts are added to the server certificate's names, after localhost,
	// 127.0.0.1 and ::1.
	Hosts []string
	// ClientName is the client certificate's DNS name (default
	// client.example).
	ClientName string
	// CAKey signs with an existing CA key instead of a new one. When it is
	// RFC 9500's testRSA4096, the root takes the public demo's subject.
	CAKey crypto.Signer
	// Force allows overwriting existing files.
	Force bool
	// Now is the start of validity (default time.Now()).
	Now time.Time
}

// Validity periods. The root lasts ten years, as development roots do. The
// leaves last 825 days: the longest that Apple platforms accept for TLS
// server certificates (https://support.apple.com/en-us/103769), and well past
// any test run. Validity starts an hour early to absorb clock skew.
const (
	rootValidity = 10 * 365 * 24 * time.Hour
	leafValidity = 825 * 24 * time.Hour
	backdate     = time.Hour
)

// File names in the output directory, as the reference workflow names them.
var setFiles = []string{"rootCA.crt", "rootCA.key", "server.crt", "server.key", "client.crt", "client.key"}

// Result lists what WriteSet wrote.
type Result struct {
	Files    []string
	DemoRoot bool // the root uses the public demo's key and subject
}

// WriteSet writes rootCA.crt/.key, server.crt/.key and client.crt/.key into
// o.Dir (rootCA.key only when the CA key is new). Nothing is overwritten
// unless o.Force; nothing is written unless every certificate was made.
func WriteSet(o Options) (*Result, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.ClientName == "" {
		o.ClientName = "client.example"
	}
	if !o.Force {
		for _, f := range setFiles {
			if f == "rootCA.key" && o.CAKey != nil {
				continue // not written: the CA key is the caller's
			}
			p := filepath.Join(o.Dir, f)
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("%s exists; use -force to overwrite", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	nb := o.Now.Add(-backdate)
	res := &Result{}
	subject := pkix.Name{Organization: []string{"req-mtls development CA"}, CommonName: "req-mtls development root"}
	var rawSubject []byte
	newCAKey := o.CAKey == nil
	if !newCAKey {
		h, err := SPKIHash(o.CAKey.Public())
		if err != nil {
			return nil, err
		}
		if h == demoKeyHash {
			rawSubject, res.DemoRoot = DemoRootSubject, true
		}
	}
	ca, err := NewCA(subject, rawSubject, o.CAKey, nb, nb.Add(rootValidity))
	if err != nil {
		return nil, err
	}
	serverHosts := append([]string{"localhost", "127.0.0.1", "::1"}, o.Hosts...)
	serverCert, serverKey, err := ca.Issue(Leaf{CommonName: "localhost", Hosts: serverHosts,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: nb, NotAfter: nb.Add(leafValidity)})
	if err != nil {
		return nil, err
	}
	clientCert, clientKey, err := ca.Issue(Leaf{CommonName: o.ClientName, Hosts: []string{o.ClientName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: nb, NotAfter: nb.Add(leafValidity)})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	write := func(name, typ string, der []byte, mode os.FileMode) error {
		p := filepath.Join(o.Dir, name)
		if err := writeFileAtomic(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
			return err
		}
		res.Files = append(res.Files, p)
		return nil
	}
	writeKey := func(name string, key crypto.Signer) error {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		return write(name, "PRIVATE KEY", der, 0o600)
	}
	if err := write("rootCA.crt", "CERTIFICATE", ca.Cert.Raw, 0o644); err != nil {
		return nil, err
	}
	if newCAKey {
		if err := writeKey("rootCA.key", ca.Key); err != nil {
			return nil, err
		}
	}
	if err := write("server.crt", "CERTIFICATE", serverCert.Raw, 0o644); err != nil {
		return nil, err
	}
	if err := writeKey("server.key", serverKey); err != nil {
		return nil, err
	}
	if err := write("client.crt", "CERTIFICATE", clientCert.Raw, 0o644); err != nil {
		return nil, err
	}
	if err := writeKey("client.key", clientKey); err != nil {
		return nil, err
	}
	return res, nil
}

// writeFileAtomic writes data to a temporary file in the same directory with
// mode, then renames it over name, so readers (and a watching server) never
// see half a file.
func writeFileAtomic(name string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

// LoadCertificate reads the first certificate of a PEM file.
func LoadCertificate(name string) (*x509.Certificate, error) {
	block, err := readPEM(name, "certificate")
	if err != nil {
		return nil, err
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("load certificate %q: PEM block is %q, not CERTIFICATE", name, block.Type)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load certificate %q: %w", name, err)
	}
	return c, nil
}

// readPEM reads the first PEM block of a file; what names it in errors.
func readPEM(name, what string) (*pem.Block, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", what, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("load %s %q: no PEM block found", what, name)
	}
	return block, nil
}

// LoadPool reads a PEM bundle of certificates to trust as roots, as a
// client's store for servers. Every block must be a CERTIFICATE that parses,
// and there must be at least one.
func LoadPool(name string) (*x509.CertPool, error) {
	roots, err := readBundle(name)
	if err != nil {
		return nil, err
	}
	return Pool(roots), nil
}

// LoadCARoots reads a PEM bundle of CA certificates for a store of client
// certificate roots. On top of LoadPool's checks, every certificate must be
// a CA (basicConstraints with cA TRUE): a leaf in a client CA bundle would
// become a trust anchor and pin that one certificate by accident, which is
// never what a request-mTLS store means.
func LoadCARoots(name string) ([]*x509.Certificate, error) {
	roots, err := readBundle(name)
	if err != nil {
		return nil, err
	}
	for i, c := range roots {
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("load CA bundle %q: certificate %d (%s) is not a CA certificate; a client CA bundle holds CA roots only",
				name, i+1, safetext.Escape(c.Subject.String()))
		}
	}
	return roots, nil
}

// Pool returns a new pool holding roots.
func Pool(roots []*x509.Certificate) *x509.CertPool {
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	return pool
}

// readBundle reads every certificate of a PEM bundle.
func readBundle(name string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("load CA bundle: %w", err)
	}
	var roots []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(rest)) > 0 {
				return nil, fmt.Errorf("load CA bundle %q: data after the last PEM block", name)
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("load CA bundle %q: unexpected PEM block %q", name, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load CA bundle %q: %w", name, err)
		}
		roots = append(roots, c)
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("load CA bundle %q: no certificates found", name)
	}
	return roots, nil
}
