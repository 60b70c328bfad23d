package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACME configures certificates obtained from an ACME server (RFC 8555)
// instead of files: golang.org/x/crypto/acme/autocert obtains, caches and
// renews them. Validation is by tls-alpn-01 (RFC 8737) on the server's own
// port, and by http-01 where HTTPHandler is served on port 80.
type ACME struct {
	// Domains the certificate is for; other names are refused.
	Domains []string
	// DirectoryURL is the ACME directory (default Let's Encrypt's).
	DirectoryURL string
	// Email is the account's contact, optional.
	Email string
	// CacheDir keeps the account key and certificates (mode 0700, files
	// 0600), so that a restart serves the cached certificate.
	CacheDir string
	// RootCAs verifies the ACME server (default: the system roots), for a
	// private one such as pebble.
	RootCAs *x509.CertPool
	// RenewBefore renews that long before expiry (default: a third of
	// the certificate's lifetime, at most 30 days).
	RenewBefore time.Duration
}

// newACMEManager checks a and makes its autocert.Manager.
func newACMEManager(a *ACME) (*autocert.Manager, error) {
	if len(a.Domains) == 0 {
		return nil, errors.New("ACME needs at least one domain")
	}
	for _, d := range a.Domains {
		if d == "" || strings.ContainsAny(d, " /:*") || net.ParseIP(d) != nil {
			return nil, fmt.Errorf("ACME domain %q: want a DNS name", d)
		}
	}
	if a.CacheDir == "" {
		return nil, errors.New("ACME needs a cache directory")
	}
	if err := os.MkdirAll(a.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("ACME cache directory: %w", err)
	}
	// Private, whatever mode it was made with: it holds the account key
	// and the certificates' keys.
	if err := os.Chmod(a.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("ACME cache directory: %w", err)
	}
	client := &acme.Client{DirectoryURL: a.DirectoryURL}
	if a.RootCAs != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: a.RootCAs, MinVersion: tls.VersionTLS12}
		client.HTTPClient = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	return &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       autocert.DirCache(a.CacheDir),
		HostPolicy:  autocert.HostWhitelist(a.Domains...),
		Email:       a.Email,
		Client:      client,
		RenewBefore: a.RenewBefore,
	}, nil
}

// HTTPHandler is for port 80 (-http-addr): it answers ACME http-01
// challenges when the server uses ACME, and redirects everything else to
// HTTPS.
func (s *Server) HTTPHandler() http.Handler {
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := s.redirectHost(r.Host)
		if host == "" {
			http.Error(w, "this server has no DNS name to redirect to", http.StatusMisdirectedRequest)
			return
		}
		if port, _ := s.httpsPort.Load().(string); port != "" && port != "443" {
			host = net.JoinHostPort(host, port)
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusMovedPermanently)
	})
	if s.acme == nil {
		return redirect
	}
	challenges := s.acme.HTTPHandler(redirect)
	// autocert checks the Host field, port included, against the
	// domains: on a port other than 80 (behind a port mapping, or
	// pebble's test setup) the name alone must be checked.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			r = r.Clone(r.Context())
			r.Host = h
		}
		challenges.ServeHTTP(w, r)
	})
}

// redirectHost is the name a port-80 request for host is sent to: host
// itself when the server is that name (an ACME domain, or a DNS name of
// its certificate), else the server's first name; never a name only the
// client chose. "" when the server has no DNS name.
func (s *Server) redirectHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var names []string
	if s.cfg.ACME != nil {
		names = s.cfg.ACME.Domains
	} else if leaf, _ := s.auth.Certificates(); leaf != nil {
		names = leaf.DNSNames
	}
	for _, n := range names {
		if strings.EqualFold(n, host) {
			return n
		}
	}
	if len(names) == 0 {
		return ""
	}
	return names[0]
}
