package client

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"os"
	"sync"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// certSource holds the client certificate and reloads it when its files
// change, keeping the last good pair when a reload fails.
type certSource struct {
	certFile, keyFile string
	warn              func(format string, a ...any)

	mu       sync.Mutex
	stamp    string // size and mtime of both files at the last load
	cert     *utls.Certificate
	id       string // identifies cert in session cache keys
	lastWarn string
}

func fileStamp(name string) string {
	fi, err := os.Stat(name)
	if err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d/%d", fi.Size(), fi.ModTime().UnixNano())
}

// load reads the pair now; it is an error if that fails.
func (s *certSource) load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked()
}

func (s *certSource) reloadLocked() error {
	stamp := fileStamp(s.certFile) + " " + fileStamp(s.keyFile)
	c, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		if data, rerr := os.ReadFile(s.keyFile); rerr == nil && httpsig.EncryptedPEM(data) {
			return fmt.Errorf("KeyFile %q: the private key is encrypted (a passphrase protects it): decrypt it first, e.g. openssl pkey -in %q -out key.pem", s.keyFile, s.keyFile)
		}
		return fmt.Errorf("load client certificate %q and key %q: %w", s.certFile, s.keyFile, err)
	}
	s.cert = &utls.Certificate{Certificate: c.Certificate, PrivateKey: c.PrivateKey, Leaf: c.Leaf}
	sum := sha256.Sum256(c.Certificate[0])
	s.id = hex.EncodeToString(sum[:16])
	s.stamp = stamp
	return nil
}

// current returns the pair and its identifier (from the leaf's SHA-256),
// re-read first when the files changed since the last load. A failed
// re-read keeps the last good pair and warns once per distinct failure.
func (s *certSource) current() (*utls.Certificate, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fileStamp(s.certFile)+" "+fileStamp(s.keyFile) != s.stamp {
		if err := s.reloadLocked(); err != nil {
			if msg := err.Error(); msg != s.lastWarn && s.warn != nil {
				s.warn("keeping the last good client certificate: %v", err)
				s.lastWarn = msg
			}
		} else {
			s.lastWarn = ""
		}
	}
	return s.cert, s.id
}

// certCache is a view of a session cache for one client certificate: its
// keys carry the certificate's identifier, so that a session made with one
// certificate is never resumed once the files hold another (a resumed
// session keeps the identity it was made with, RFC 8446, Section 2.2).
type certCache struct {
	utls.ClientSessionCache
	id string
}

func (c certCache) Get(key string) (*utls.ClientSessionState, bool) {
	return c.ClientSessionCache.Get(c.id + " " + key)
}

func (c certCache) Put(key string, cs *utls.ClientSessionState) {
	c.ClientSessionCache.Put(c.id+" "+key, cs)
}
