package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
	"github.com/req-mtls/req-mtls/internal/safetext"
)

// DemoRootSubject is the DER subject of the public request-mTLS demo's root,
// C=US, ST=California, L=San Francisco, O=ACME Ltd, OU=ACME, with C as a
// PrintableString and the rest as UTF8String. Client certificates chain to
// that root only if their issuer is exactly these bytes.
var DemoRootSubject = mustHex("305c310b30090603550406130255533113301106035504080c0a43616c69666f726e69613116301406035504070c0d53616e204672616e636973636f3111300f060355040a0c0841434d45204c7464310d300b060355040b0c0441434d45")

// TestRSA4096SPKISHA256 is the SHA-256 of the DER SubjectPublicKeyInfo of
// RFC 9500's testRSA4096 key (RFC 9500, Section 2.1), the key of the public
// demo's root. It recognises the key, a public test key that anyone can sign
// with; the repository keeps a copy in third_party/rfc9500 for the demo
// chain only.
const TestRSA4096SPKISHA256 = "96465ea5dc9bb2da7b351d808a7196e5761f2412a5040131c68d719aaba28fb9"

// demoKeyHash is TestRSA4096SPKISHA256; tests point it at a key of their own.
var demoKeyHash = TestRSA4096SPKISHA256

// ChainsToDemoRoot reports whether cert was issued under the public demo's
// root subject (its issuer is exactly DemoRootSubject). It does not check the
// signature: see VerifyDemoSignature.
func ChainsToDemoRoot(cert *x509.Certificate) bool {
	return string(cert.RawIssuer) == string(DemoRootSubject)
}

// VerifyDemoSignature checks that cert is issued under the public demo's
// root subject and signed by the key whose public half is pub, which must
// be RFC 9500's testRSA4096.
func VerifyDemoSignature(cert *x509.Certificate, pub crypto.PublicKey) error {
	if !IsDemoKey(pub) {
		return errors.New("the key is not RFC 9500's testRSA4096")
	}
	if !ChainsToDemoRoot(cert) {
		return fmt.Errorf("issuer is %q, not the public demo's root", safetext.Escape(cert.Issuer.String()))
	}
	issuer := &x509.Certificate{RawSubject: DemoRootSubject, PublicKey: pub, PublicKeyAlgorithm: x509.RSA}
	if err := cert.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("signature does not verify with testRSA4096: %w", err)
	}
	return nil
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

// IsDemoKey reports whether pub is the public half of RFC 9500's testRSA4096
// (by its SubjectPublicKeyInfo's SHA-256), the key of the public demo's root.
func IsDemoKey(pub crypto.PublicKey) bool {
	h, err := SPKIHash(pub)
	return err == nil && h == demoKeyHash
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
	// CAName is the common name of a new root (default "req-mtls
	// development root"), so that roots made for different stores (one
	// for bots, one for other clients) can be told apart by subject.
	CAName string
	// CA issues the certificates: no root is made or written. It takes
	// precedence over CAKey.
	CA *Authority
	// CAKey is the key of the new root instead of a fresh one; rootCA.key
	// is then not written. RFC 9500's testRSA4096 is refused here, as a
	// root anyone can sign under: with ClientOnly it issues a client
	// certificate under the public demo's root subject (DemoIssuer)
	// instead.
	CAKey crypto.Signer
	// ClientOnly writes client.crt and client.key alone, issued by CA (or
	// by testRSA4096 as CAKey, for the public demo).
	ClientOnly bool
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

// DefaultCAName is the common name of a new root without Options.CAName.
const DefaultCAName = "req-mtls development root"

// Result lists what WriteSet wrote.
type Result struct {
	Files []string
	// Demo reports that the client certificate is issued under the public
	// demo's root (RFC 9500's testRSA4096 and DemoRootSubject).
	Demo bool
}

// ErrDemoRoot refuses to make a root from RFC 9500's testRSA4096.
var ErrDemoRoot = errors.New("the CA key is RFC 9500's testRSA4096, a public test key: a root made from it would trust certificates anyone can make; it can only issue a client certificate for the public demo (-client-only)")

// WriteSet writes rootCA.crt/.key, server.crt/.key and client.crt/.key into
// o.Dir: rootCA.key only when the root's key is new, neither rootCA file when
// o.CA issues, and client.crt/.key alone with o.ClientOnly. Nothing is
// overwritten unless o.Force; nothing is written unless every certificate
// was made.
func WriteSet(o Options) (*Result, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.ClientName == "" {
		o.ClientName = "client.example"
	}
	if err := CheckDNSName(o.ClientName); err != nil {
		return nil, fmt.Errorf("client name: %w", err)
	}
	for _, h := range o.Hosts {
		if err := CheckHost(h); err != nil {
			return nil, fmt.Errorf("server name: %w", err)
		}
	}
	if o.CAName == "" {
		o.CAName = DefaultCAName
	}
	nb := o.Now.Add(-backdate)
	res := &Result{}

	// Who issues, and which files are written.
	ca := o.CA
	var newRootKey bool
	switch {
	case ca != nil:
		if err := checkAuthority(ca, o.Now); err != nil {
			return nil, err
		}
	case o.CAKey != nil && IsDemoKey(o.CAKey.Public()):
		if !o.ClientOnly {
			return nil, ErrDemoRoot
		}
		ca, res.Demo = DemoIssuer(o.CAKey), true
	case o.ClientOnly:
		return nil, errors.New("a client certificate alone needs an existing CA: its certificate and key")
	default:
		newRootKey = o.CAKey == nil
		var err error
		ca, err = NewCA(pkix.Name{Organization: []string{"req-mtls development CA"}, CommonName: o.CAName}, nil, o.CAKey, nb, nb.Add(rootValidity))
		if err != nil {
			return nil, err
		}
	}
	var names []string
	if o.CA == nil && !res.Demo {
		names = append(names, "rootCA.crt")
		if newRootKey {
			names = append(names, "rootCA.key")
		}
	}
	if !o.ClientOnly {
		names = append(names, "server.crt", "server.key")
	}
	names = append(names, "client.crt", "client.key")
	if !o.Force {
		for _, f := range names {
			p := filepath.Join(o.Dir, f)
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("%s exists; use -force to overwrite", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}

	// A leaf never outlives its issuer.
	na := nb.Add(leafValidity)
	if !ca.Cert.NotAfter.IsZero() && na.After(ca.Cert.NotAfter) {
		na = ca.Cert.NotAfter
	}
	out := map[string][]byte{}
	if o.CA == nil && !res.Demo {
		out["rootCA.crt"] = certPEM(ca.Cert.Raw)
		if newRootKey {
			k, err := keyPEM(ca.Key)
			if err != nil {
				return nil, err
			}
			out["rootCA.key"] = k
		}
	}
	issue := func(name string, l Leaf) error {
		l.NotBefore, l.NotAfter = nb, na
		cert, key, err := ca.Issue(l)
		if err != nil {
			return err
		}
		out[name+".crt"] = certPEM(cert.Raw)
		out[name+".key"], err = keyPEM(key)
		return err
	}
	if !o.ClientOnly {
		serverHosts := append([]string{"localhost", "127.0.0.1", "::1"}, o.Hosts...)
		if err := issue("server", Leaf{CommonName: "localhost", Hosts: serverHosts,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return nil, err
		}
	}
	if err := issue("client", Leaf{CommonName: o.ClientName, Hosts: []string{o.ClientName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, err
	}

	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	for _, f := range names {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(f, ".key") {
			mode = 0o600
		}
		p := filepath.Join(o.Dir, f)
		if err := writeFileAtomic(p, out[f], mode); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, p)
	}
	return res, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// LoadAuthority reads an existing CA to issue under: its certificate and
// its key, which must match. The certificate must be a CA allowed to sign
// certificates.
func LoadAuthority(certFile, keyFile string) (*Authority, error) {
	cert, err := LoadCertificate(certFile)
	if err != nil {
		return nil, err
	}
	key, err := LoadKey(keyFile)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %q does not belong to CA certificate %q", keyFile, certFile)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("load CA %q: not a CA certificate (%s)", certFile, safetext.Escape(cert.Subject.String()))
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load CA %q: its key usage does not allow signing certificates", certFile)
	}
	return &Authority{Cert: cert, Key: key}, nil
}

// checkAuthority refuses a CA that cannot issue now.
func checkAuthority(ca *Authority, now time.Time) error {
	if ca.Cert.NotAfter.IsZero() {
		return nil
	}
	if !now.Before(ca.Cert.NotAfter) {
		return fmt.Errorf("CA certificate (%s) expired on %s", safetext.Escape(ca.Cert.Subject.String()), ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	return nil
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

// LoadBundle reads every certificate of a PEM bundle, with LoadPool's
// checks.
func LoadBundle(name string) ([]*x509.Certificate, error) { return readBundle(name) }

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

// WriteSignatureKey makes an Ed25519 key for Web Bot Auth signatures: file
// (PKCS #8 PEM, mode 0600) and file.jwks (its public JWKS). An existing
// file is kept unless force. It returns the key's JWK SHA-256 thumbprint
// (RFC 7638), Web Bot Auth's keyid.
func WriteSignatureKey(file string, force bool) (string, error) {
	if _, err := os.Stat(file); err == nil && !force {
		return "", fmt.Errorf("%s exists; use -force to overwrite", file)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", err
	}
	x := base64.RawURLEncoding.EncodeToString(pub)
	jwks := `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `"}]}` + "\n"
	if err := os.WriteFile(file+".jwks", []byte(jwks), 0o644); err != nil {
		return "", err
	}
	return httpsig.Thumbprint(pub), nil
}
