package reqmtls

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/req-mtls/req-mtls/internal/forward"
)

// ForwardProxyConfig configures a ForwardProxy.
type ForwardProxyConfig struct {
	// Client is how the proxy connects to sites: Flags, the certificate,
	// RootCAs (nil: the system roots), Timeout, and Proxy for a proxy
	// further up (nil: the environment's). Hosts that FlagHosts leaves out
	// get the same connection without flags or certificate.
	Client ClientConfig
	// CADir holds the proxy's root, ca.crt and ca.key, made there on first
	// use (key 0600). Default: the user's config directory
	// (os.UserConfigDir) + "/req-mtls/forward-proxy-ca".
	CADir string
	// FlagHosts are the hosts that get the flags, the certificate and the
	// signature (Client.SignatureKey), as
	// path.Match patterns ("*.example.com", "*"); empty means every host.
	// Sending them identifies the bot, so a crawler may keep them to the
	// sites it means to be known by.
	FlagHosts []string
	// Auth, if set, requires Basic proxy credentials (407 otherwise).
	Auth func(user, password string) bool
	// Logger receives one line per request (host, flags sent, certificate
	// requested and sent, status, bytes, duration) and failures.
	Logger *slog.Logger
}

// A ForwardProxy is an HTTP forward (egress) proxy that gives any HTTP
// client request mTLS: curl, Python's requests, Node and headless Chromium
// set no TLS flags themselves, but pointed at this proxy (HTTPS_PROXY, or
// their proxy option) and trusting its root, their https requests reach the
// sites with flag 80 and the certificate. For CONNECT it terminates the
// client's TLS with a leaf for the host, signed by its root, and opens its
// own connection to the host with a Transport; absolute http:// requests
// are forwarded as they are. Every relayed https response carries
// Req-Mtls-Cert-Requested: ?1 or ?0, whether the site asked for the
// certificate. Failures reach the client as a 502 (504 for a timeout)
// whose body says why. It is an http.Handler: serve it on a listener of
// your own (loopback, or with Auth).
type ForwardProxy struct {
	h       *forward.Proxy
	ca      *forward.CA
	created bool
	caDir   string
}

// NewForwardProxy loads or makes the root and sets up the connections to
// sites.
func NewForwardProxy(cfg ForwardProxyConfig) (*ForwardProxy, error) {
	dir := cfg.CADir
	if dir == "" {
		base, err := os.UserConfigDir()
		if err != nil {
			return nil, fmt.Errorf("forward proxy: no CADir and no user config directory: %w", err)
		}
		dir = filepath.Join(base, "req-mtls", "forward-proxy-ca")
	}
	ca, created, err := forward.LoadOrCreateCA(dir)
	if err != nil {
		return nil, err
	}
	for _, p := range cfg.FlagHosts {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("forward proxy: flag host pattern %q: %v", p, err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var mu sync.Mutex
	asked := map[string]Handshake{}
	onHS := func(addr string, h Handshake) {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := asked[addr]; ok && h.Resumed {
			// A resumed session keeps the identity of the one it resumes.
			h.CertRequested, h.CertSent = prev.CertRequested, prev.CertSent
		}
		if len(asked) >= 100000 {
			clear(asked)
		}
		asked[addr] = h
	}
	flaggedCfg := cfg.Client
	flaggedCfg.OnHandshake = onHS
	flagged, err := NewTransport(flaggedCfg)
	if err != nil {
		return nil, err
	}
	plainCfg := cfg.Client
	// Hosts left out of FlagHosts learn nothing of the bot: no flag, no
	// certificate, no signature.
	plainCfg.Flags, plainCfg.CertFile, plainCfg.KeyFile, plainCfg.GetClientCertificate = Flags{}, "", "", nil
	plainCfg.SignatureKey, plainCfg.SignatureAgent, plainCfg.SignatureAgentDictionary = nil, "", false
	plainCfg.OnHandshake = onHS
	plain, err := NewTransport(plainCfg)
	if err != nil {
		return nil, err
	}
	h := forward.New(forward.Config{
		CA: ca, Flagged: flagged, Plain: plain,
		FlagHost: func(host string) bool {
			if len(cfg.FlagHosts) == 0 {
				return true
			}
			for _, p := range cfg.FlagHosts {
				if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(host)); ok {
					return true
				}
			}
			return false
		},
		Asked: func(addr string) (bool, bool, bool) {
			mu.Lock()
			defer mu.Unlock()
			h, ok := asked[addr]
			return h.CertRequested, h.CertSent, ok
		},
		Explain: explainUpstream,
		Auth:    cfg.Auth,
		Log:     cfg.Logger,
	})
	return &ForwardProxy{h: h, ca: ca, created: created, caDir: dir}, nil
}

// explainUpstream is the status and message a client of the proxy gets
// for a failure to reach a site.
func explainUpstream(err error) (int, string) {
	status := http.StatusBadGateway
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() || strings.Contains(err.Error(), "timed out") {
		status = http.StatusGatewayTimeout
	}
	var e *Error
	if errors.As(err, &e) {
		return status, e.Msg
	}
	return status, err.Error()
}

func (p *ForwardProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.h.ServeHTTP(w, r) }

// RootCertificate returns the proxy's root, for clients to trust.
func (p *ForwardProxy) RootCertificate() *x509.Certificate { return p.ca.Cert }

// RootFile returns the path of the root's PEM file (ca.crt in CADir), and
// whether NewForwardProxy made it.
func (p *ForwardProxy) RootFile() (string, bool) { return filepath.Join(p.caDir, "ca.crt"), p.created }

// RootSPKIHash is the base64 SHA-256 of the root's SubjectPublicKeyInfo,
// for Chromium's --ignore-certificate-errors-spki-list.
func (p *ForwardProxy) RootSPKIHash() string { return p.ca.SPKIHash() }
