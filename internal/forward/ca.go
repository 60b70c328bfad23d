package forward

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// A CA is the proxy's own root: it signs a leaf for each host a client
// tunnels to, so that the proxy can terminate the client's TLS. Clients
// trust it explicitly (curl --cacert, REQUESTS_CA_BUNDLE,
// NODE_EXTRA_CA_CERTS, Chromium's --ignore-certificate-errors-spki-list).
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer

	leafKey *ecdsa.PrivateKey // one key for every leaf, as mitmproxy does: a signature per host, no key generation
	mu      sync.Mutex
	leaves  map[string]*tls.Certificate
}

// LeafValidity is how long a minted leaf is valid: a day, made again when
// it has less than an hour left. Short, since the key never leaves memory
// and clients need nothing longer.
const LeafValidity = 24 * time.Hour

// maxLeaves bounds the leaf cache; when full it starts over.
const maxLeaves = 10000

// LoadOrCreateCA reads dir/ca.crt and dir/ca.key, or makes them when
// neither exists (the directory 0700, the key 0600). It returns whether it
// made them. A key that other users may read is loaded all the same, with
// a warning to warn.
func LoadOrCreateCA(dir string, warn func(format string, a ...any)) (*CA, bool, error) {
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	_, errC := os.Stat(certFile)
	_, errK := os.Stat(keyFile)
	created := false
	switch {
	case errors.Is(errC, os.ErrNotExist) && errors.Is(errK, os.ErrNotExist):
		if err := createCA(dir, certFile, keyFile); err != nil {
			return nil, false, err
		}
		created = true
	case errC != nil || errK != nil:
		return nil, false, fmt.Errorf("proxy CA in %q: want both ca.crt and ca.key, or neither (to make them): %v", dir, errors.Join(errC, errK))
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, false, fmt.Errorf("proxy CA in %q: %w", dir, err)
	}
	// Whoever reads the key mints certificates the proxy's clients trust
	// for any site. (Windows has no such mode bits.)
	if fi, err := os.Stat(keyFile); err == nil && runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		warn("the proxy's root key %q is open to other users (mode %04o): anyone who reads it can pose as any site to the proxy's clients; chmod 600 it",
			keyFile, fi.Mode().Perm())
	}
	if !pair.Leaf.IsCA {
		return nil, false, fmt.Errorf("proxy CA %q is not a CA certificate", certFile)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, false, fmt.Errorf("proxy CA key %q cannot sign", keyFile)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, err
	}
	return &CA{Cert: pair.Leaf, key: signer, leafKey: leafKey, leaves: map[string]*tls.Certificate{}}, created, nil
}

func createCA(dir, certFile, keyFile string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("proxy CA directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"req-mtls forward proxy"}, CommonName: "req-mtls forward proxy root (" + host + ")"},
		NotBefore:    now.Add(-time.Hour),
		// Ten years: the root stays in the clients' trust settings; the
		// leaves it signs live a day.
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return fmt.Errorf("proxy CA key: %w", err)
	}
	return os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// SPKIHash is the base64 SHA-256 of the root's SubjectPublicKeyInfo, as
// Chromium's --ignore-certificate-errors-spki-list takes it.
func (ca *CA) SPKIHash() string {
	sum := sha256.Sum256(ca.Cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Leaf returns a certificate for host (a DNS name or an IP address),
// minted on first use and cached until it has less than an hour left.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	now := time.Now()
	ca.mu.Lock()
	if c, ok := ca.leaves[host]; ok && c.Leaf.NotAfter.Sub(now) > time.Hour {
		ca.mu.Unlock()
		return c, nil
	}
	ca.mu.Unlock()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(LeafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, ca.leafKey.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("mint a certificate for %q: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: ca.leafKey, Leaf: leaf}
	ca.mu.Lock()
	if len(ca.leaves) >= maxLeaves {
		clear(ca.leaves)
	}
	ca.leaves[host] = c
	ca.mu.Unlock()
	return c, nil
}
