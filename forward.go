package reqmtls

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

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
	// use (key 0600), once the rest of the configuration has loaded. A key
	// open to other users is loaded with a warning (Client.Warn, else
	// Logger). Default: the user's config directory
	// (os.UserConfigDir) + "/req-mtls/forward-proxy-ca".
	CADir string
	// FlagHosts are the hosts that get the flags, the certificate and the
	// signature (Client.SignatureKey), as
	// path.Match patterns ("*.example.com", "*"); empty means every host.
	// Sending them identifies the bot, so a crawler may keep them to the
	// sites it means to be known by.
	FlagHosts []string
	// AllowDestinations opens destinations refused by default to clients
	// that reach the proxy on a non-loopback address: loopback,
	// link-local and unspecified addresses, and the proxy host's own.
	// Such a client could otherwise reach what listens on the host for it
	// alone (a profiler, an admin port, a cloud metadata service) and map
	// its open ports. The rule applies to the address connected to, after
	// the name is resolved. Clients on loopback go anywhere.
	AllowDestinations []netip.Prefix
	// Auth, if set, requires Basic proxy credentials (407 otherwise).
	Auth func(user, password string) bool
	// IdleTimeout closes a CONNECT tunnel idle between requests for that
	// long (default 2 minutes). The http.Server that serves the proxy
	// closes the other idle connections: give it the same IdleTimeout.
	IdleTimeout time.Duration
	// MaxTunnels caps the CONNECT tunnels open at once (default
	// DefaultMaxTunnels; negative: no cap): past it a CONNECT gets a 503,
	// and Logger hears when the cap is reached.
	MaxTunnels int
	// Logger receives one line per request (host, flags sent, certificate
	// requested and sent, status, bytes, duration) and failures.
	Logger *slog.Logger
}

// DefaultMaxTunnels is ForwardProxyConfig.MaxTunnels's default: each
// tunnel holds a file for the client's connection and one or more for the
// site's.
const DefaultMaxTunnels = 1024

// A ForwardProxy is an HTTP forward (egress) proxy that gives any HTTP
// client request mTLS: curl, Python's requests, Node and headless Chromium
// set no TLS flags themselves, but pointed at this proxy (HTTPS_PROXY, or
// their proxy option) and trusting its root, their https requests reach the
// sites with flag 80 and the certificate. For CONNECT it terminates the
// client's TLS with a leaf for the host, signed by its root, and opens its
// own connection to the host with a Transport; absolute http:// requests,
// and plain HTTP in a tunnel (ws://), are forwarded as they are. Every relayed https response carries
// Req-Mtls-Cert-Requested: ?1 or ?0, whether the site asked for the
// certificate. Failures reach the client as a 502 (504 for a timeout)
// whose body says why. A client that reaches it on a non-loopback address
// gets a 403 for loopback, link-local, unspecified and the host's own
// addresses (AllowDestinations). A proxy chosen for a request (Client.Proxy,
// or the environment's) that is this proxy itself is a 508. It is an
// http.Handler: serve it on a listener of your own (loopback, or with
// Auth).
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
	for _, p := range cfg.FlagHosts {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("forward proxy: flag host pattern %q: %v", p, err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	maxTunnels := cfg.MaxTunnels
	switch {
	case maxTunnels == 0:
		maxTunnels = DefaultMaxTunnels
	case maxTunnels < 0:
		maxTunnels = 0 // no cap
	}
	var mu sync.Mutex
	// The last handshake by "host:port", the host lower-cased: the
	// Transport names a host as it dials it, the CONNECT line as the
	// client typed it.
	asked := map[string]Handshake{}
	onHS := func(addr string, h Handshake) {
		addr = strings.ToLower(addr)
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
	if cfg.Client.Proxy == nil {
		cfg.Client.Proxy = http.ProxyFromEnvironment
	}
	// A proxy whose environment names itself would send each request to
	// itself until it runs out of files: it answers 508 instead.
	cfg.Client.Proxy = forward.NoLoop(cfg.Client.Proxy)
	dests := &forward.Destinations{Allow: cfg.AllowDestinations}
	near, err := upstream(cfg.Client, onHS, nil)
	if err != nil {
		return nil, err
	}
	far, err := upstream(cfg.Client, onHS, dests.Control)
	if err != nil {
		return nil, err
	}
	// The root comes last: a proxy that cannot start (a key pair that
	// does not load) leaves no new CA behind.
	warn := cfg.Client.Warn
	if warn == nil {
		warn = func(format string, a ...any) { cfg.Logger.Warn(fmt.Sprintf(format, a...)) }
	}
	ca, created, err := forward.LoadOrCreateCA(dir, warn)
	if err != nil {
		return nil, err
	}
	h := forward.New(forward.Config{
		CA: ca, Near: near, Far: far, Destinations: dests,
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
			h, ok := asked[strings.ToLower(addr)]
			return h.CertRequested, h.CertSent, ok
		},
		Explain:     explainUpstream,
		Auth:        cfg.Auth,
		IdleTimeout: cfg.IdleTimeout,
		MaxTunnels:  maxTunnels,
		Log:         cfg.Logger,
	})
	return &ForwardProxy{h: h, ca: ca, created: created, caDir: dir}, nil
}

// upstream makes the connections to sites of one kind of client, with
// control (nil for none) refusing destinations before connecting.
func upstream(c ClientConfig, onHS func(string, Handshake), control func(context.Context, string, string, syscall.RawConn) error) (forward.Upstream, error) {
	c.OnHandshake = onHS
	c.dialControl = control
	flagged, err := NewTransport(c)
	if err != nil {
		return forward.Upstream{}, err
	}
	// Hosts left out of FlagHosts learn nothing of the bot: no flag, no
	// certificate, no signature.
	c.Flags, c.CertFile, c.KeyFile, c.GetClientCertificate = Flags{}, "", "", nil
	c.SignatureKey, c.SignatureAgent, c.SignatureAgentDictionary = nil, "", false
	plain, err := NewTransport(c)
	if err != nil {
		return forward.Upstream{}, err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	// http:// requests: net/http's transport, through the same proxy,
	// connecting under the same rule and bound.
	h := &http.Transport{Proxy: c.Proxy, DialContext: (&net.Dialer{Timeout: timeout, ControlContext: control}).DialContext,
		TLSHandshakeTimeout: timeout, MaxIdleConns: c.MaxIdleConns, MaxIdleConnsPerHost: c.MaxIdleConnsPerHost,
		MaxConnsPerHost: c.MaxConnsPerHost, IdleConnTimeout: 90 * time.Second}
	return forward.Upstream{Flagged: flagged, Plain: plain, HTTP: h}, nil
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

// Shutdown drains the CONNECT tunnels, which http.Server.Shutdown does not
// see (their connections are hijacked): a CONNECT gets a 503 from then on,
// an idle tunnel is closed at once, and one serving a request once the
// request is done. When ctx ends first, the tunnels left are closed and
// ctx's error returned. Call it alongside the http.Server's Shutdown:
//
//	go fp.Shutdown(ctx)
//	srv.Shutdown(ctx)
func (p *ForwardProxy) Shutdown(ctx context.Context) error { return p.h.Shutdown(ctx) }

// RootCertificate returns the proxy's root, for clients to trust.
func (p *ForwardProxy) RootCertificate() *x509.Certificate { return p.ca.Cert }

// RootFile returns the path of the root's PEM file (ca.crt in CADir), and
// whether NewForwardProxy made it.
func (p *ForwardProxy) RootFile() (string, bool) { return filepath.Join(p.caDir, "ca.crt"), p.created }

// RootSPKIHash is the base64 SHA-256 of the root's SubjectPublicKeyInfo,
// for Chromium's --ignore-certificate-errors-spki-list.
func (p *ForwardProxy) RootSPKIHash() string { return p.ca.SPKIHash() }
