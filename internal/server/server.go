// Package server is the request-mTLS HTTPS server: a stock crypto/tls server
// that sends a CertificateRequest to clients that set the request-mTLS flag
// (draft-jhoyla-req-mtls-flag-02, flag 80 of draft-ietf-tls-tlsflags), and
// to no one else, and reports what it saw at /debug.
//
// Client authentication is internal/auth's; this package adds the
// listener that completes handshakes under a deadline, the HTTP server and
// its pages.
package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/fleetstate"
	"github.com/req-mtls/req-mtls/internal/metrics"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// Supported is the set of flags this server acts on.
var Supported = tlsflags.Must(tlsflags.RequestMTLS)

// Files names the PEM files the server loads, and reloads when they change.
type Files struct {
	Cert, Key string // server certificate chain and its private key
	ClientCA  string // roots for client certificates (-client-cacert)
	BotCA     string // optional roots for flagged clients only (-bot-cacert)
	// TicketKeys is an optional session ticket keys file (-ticket-keys)
	// shared by the instances of a fleet.
	TicketKeys string
	// ClientCRL is an optional file of CRLs (-client-crl).
	ClientCRL string
	// Deny is an optional deny list (-deny): certificates, keys and
	// agents refused on both layers (package deny).
	Deny string
}

// Config configures a Server. The zero value of every optional field is a
// sensible default.
type Config struct {
	Files  Files
	Policy auth.Policy

	// HandshakeTimeout bounds the TLS handshake, counted from the moment
	// the connection is accepted (default 10 s): a client that connects
	// and stays silent is cut off after it. ReadHeaderTimeout and
	// IdleTimeout are net/http's (defaults 10 s and 120 s).
	// MaxHeaderBytes defaults to 64 KiB and MaxBodyBytes to 1 MiB.
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the handshakes in progress at once (default
	// 1024): a connection accepted past it is closed at once and counted.
	// MaxHelloBytes bounds the bytes held for ClientHellos being read
	// (default 32 MiB; see auth.Config).
	MaxHandshakes     int
	MaxHelloBytes     int64
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	MaxBodyBytes      int64

	// RecheckInterval is how often Watch compares the files with what
	// was loaded even when no file event came (default 1 minute).
	RecheckInterval time.Duration

	// Signatures, if set, verifies each request's Web Bot Auth signature;
	// the verdict is recorded on the request (webbotauth.ResultOf) for the
	// gateway, /debug, the access log and the metrics. Its agents also
	// vouch for client certificates that name them (store agent), and
	// its deny list is Files.Deny.
	Signatures *webbotauth.Verifier
	// DirectoryKeys, if set, are served as a Web Bot Auth key directory
	// (webbotauth.DirectoryHandler) at its well-known path.
	// They are Ed25519 signing keys or the ECDSA P-256 key of the agent's
	// TLS client certificate.
	DirectoryKeys []crypto.Signer
	// ACME, if set, replaces Files.Cert and Files.Key: the certificate
	// comes from an ACME server and is renewed while the server runs.
	ACME *ACME
	// Redis, if set, is the state the fleet shares (the nonces of
	// Signatures, when its Config.Nonces is Redis.Nonces): its metrics
	// are served with the server's, and Shutdown closes it.
	Redis *fleetstate.Redis

	// DrainDelay is how long Shutdown keeps accepting and serving while
	// /readyz already answers 503, so that a load balancer's health
	// checks take the instance out of rotation before it stops
	// accepting (default 0: stop at once).
	DrainDelay time.Duration

	// ProxyProtocolFrom lists the load balancers' addresses: connections
	// from them must start with a PROXY protocol header (v1 or v2), whose
	// client address the server then uses everywhere (logs, /debug,
	// forwarded fields); from other addresses a header is refused.
	ProxyProtocolFrom []netip.Prefix

	// Handler serves requests (default: the server's own pages, the index
	// at / and the report at /debug).
	Handler http.Handler
	// PagesPath, with a Handler, mounts the server's own pages under this
	// path (ending in "/") in front of it; empty leaves them out.
	PagesPath string
	// AccessLog, if set, receives a line per request.
	AccessLog *slog.Logger
	// TLS is a base config for what request mTLS leaves alone (curves,
	// say); see auth.Authenticator.TLSConfig. May be nil.
	TLS *tls.Config
	// KeyLog receives TLS secrets in NSS key log format, for debugging.
	KeyLog io.Writer
	// Logger receives handshake errors and reloads, and a debug line per
	// connection (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock for certificate validity (default time.Now).
	Now func() time.Time
}

// A Server serves HTTPS with request mTLS. It is safe for concurrent use.
type Server struct {
	cfg  Config
	log  *slog.Logger
	auth *auth.Authenticator
	base *tls.Config
	http *http.Server

	listenersMu sync.Mutex
	listeners   []*handshakeListener

	acme         *autocert.Manager
	httpsPort    atomic.Value // string: the port Serve listens on, for HTTPHandler's redirect
	hsLimit      *rateLimiter // handshake failure log lines
	refusedLimit *rateLimiter // "too many handshakes" log lines
	metrics      *metrics.Metrics
	draining     atomic.Bool
	inFlight     atomic.Int64 // handshakes in progress, over every listener
}

// New loads the files in cfg and returns a Server ready to Serve.
func New(cfg Config) (*Server, error) {
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = 1024
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 64 << 10
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var manager *autocert.Manager
	switch {
	case cfg.ACME != nil:
		if cfg.Files.Cert != "" || cfg.Files.Key != "" {
			return nil, errors.New("ACME replaces the certificate and key files: give one or the other")
		}
		var err error
		if manager, err = newACMEManager(cfg.ACME); err != nil {
			return nil, err
		}
	case cfg.Files.Cert == "" || cfg.Files.Key == "":
		return nil, errors.New("a server certificate and key are required")
	}
	var m *metrics.Metrics
	var a *auth.Authenticator
	var s *Server
	m = metrics.New(func() (*x509.Certificate, map[string][]*x509.Certificate) { return a.Certificates() },
		func() []auth.CRLInfo { return a.CRLs() },
		func() float64 { return float64(s.inFlight.Load()) }, func() float64 { return float64(a.HelloBytes()) })
	var agents auth.AgentVoucher
	if cfg.Signatures != nil {
		agents = cfg.Signatures
	}
	a, err := auth.New(auth.Config{
		OnReload: m.Reload,
		Policy:   cfg.Policy,
		CertFile: cfg.Files.Cert, KeyFile: cfg.Files.Key,
		ClientCAFile: cfg.Files.ClientCA, BotCAFile: cfg.Files.BotCA, ClientCRLFile: cfg.Files.ClientCRL,
		Agents: agents, DenyFile: cfg.Files.Deny,
		TicketKeysFile:  cfg.Files.TicketKeys,
		RecheckInterval: cfg.RecheckInterval,
		Logger:          cfg.Logger,
		Now:             cfg.Now,
		MaxHelloBytes:   cfg.MaxHelloBytes,
		// The handshake listener bounds handshakes itself.
		HandshakeTimeout: -1,
	})
	if err != nil {
		return nil, err
	}
	base := &tls.Config{}
	if cfg.TLS != nil {
		base = cfg.TLS.Clone()
	}
	if cfg.KeyLog != nil {
		base.KeyLogWriter = cfg.KeyLog
	}
	if manager != nil {
		base.GetCertificate = manager.GetCertificate
		// tls-alpn-01 (RFC 8737): validation connections offer
		// acme-tls/1 alone; auth answers them without client
		// authentication, and the listener closes them after the
		// handshake.
		base.NextProtos = []string{"h2", "http/1.1", acme.ALPNProto}
	}
	s = &Server{cfg: cfg, log: cfg.Logger, auth: a, base: a.TLSConfig(base), hsLimit: newRateLimiter(10, 50), refusedLimit: newRateLimiter(1, 5), metrics: m, acme: manager}
	h := cfg.Handler
	switch {
	case h == nil:
		h = s.Pages("/")
	case cfg.PagesPath != "":
		if !strings.HasPrefix(cfg.PagesPath, "/") || !strings.HasSuffix(cfg.PagesPath, "/") {
			return nil, fmt.Errorf("pages path %q must start and end with /", cfg.PagesPath)
		}
		mux := http.NewServeMux()
		mux.Handle(cfg.PagesPath, s.Pages(cfg.PagesPath))
		mux.Handle("/", h)
		h = mux
	}
	if cfg.Redis != nil {
		cfg.Redis.SetObserver(m.AddRedis())
	}
	if cfg.Signatures != nil {
		m.AddAgents(cfg.Signatures)
		// A signature's @authority may be any name of the certificate
		// in force, not only the SNI.
		cfg.Signatures.SetSiteCertificate(func() *x509.Certificate { leaf, _ := a.Certificates(); return leaf })
		cfg.Signatures.SetDenyList(a.Denied)
		// A key an agent no longer lists vouches for no open
		// connection either.
		cfg.Signatures.OnKeysDropped(func(agent string) { a.Recheck("keys dropped by agent " + agent) })
	}
	if len(cfg.DirectoryKeys) > 0 {
		// A bot operator's site: its key directory, signed.
		dh, err := webbotauth.DirectoryHandler(cfg.DirectoryKeys, nil)
		if err != nil {
			return nil, err
		}
		mux := http.NewServeMux()
		mux.Handle(webbotauth.DirectoryPath, dh)
		mux.Handle("/", h)
		h = mux
	}
	h = observe(h, m, cfg.AccessLog, cfg.Signatures)
	s.http = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		ConnContext:       ConnContext,
	}
	if err := serveHTTP2(s.http); err != nil {
		return nil, err
	}
	return s, nil
}

// Metrics returns the server's Prometheus collectors.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// AdminHandler serves /metrics (Prometheus), /healthz (the process is up),
// /readyz (503 once Shutdown has begun, so that a load balancer stops
// sending) and, with pprof, Go's /debug/pprof.
func (s *Server) AdminHandler(pprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	if pprof {
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", httppprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", httppprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	}
	return mux
}

// Auth returns the server's Authenticator.
func (s *Server) Auth() *auth.Authenticator { return s.auth }

// Reload loads every certificate file again (see auth.Authenticator.Reload)
// and asks for a fetch of every agent's key directory.
func (s *Server) Reload(trigger string) error {
	if s.cfg.Signatures != nil {
		s.cfg.Signatures.RefreshNow()
	}
	return s.auth.Reload(trigger)
}

// Watch reloads certificate files as they change, until ctx ends.
func (s *Server) Watch(ctx context.Context) error { return s.auth.Watch(ctx) }

// Serve accepts connections on l (a plain TCP listener) until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if _, port, err := net.SplitHostPort(l.Addr().String()); err == nil {
		s.httpsPort.Store(port)
	}
	if len(s.cfg.ProxyProtocolFrom) > 0 {
		l = &proxyproto.Listener{Listener: l, ConnPolicy: s.proxyPolicy, ReadHeaderTimeout: s.cfg.HandshakeTimeout}
	}
	hl := newHandshakeListener(l, s, s.cfg.HandshakeTimeout)
	s.listenersMu.Lock()
	s.listeners = append(s.listeners, hl)
	s.listenersMu.Unlock()
	err := s.http.Serve(hl)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// proxyPolicy requires a PROXY header from the listed balancers and
// refuses one from anyone else.
func (s *Server) proxyPolicy(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
	if ap, err := netip.ParseAddrPort(o.Upstream.String()); err == nil {
		for _, p := range s.cfg.ProxyProtocolFrom {
			if p.Contains(ap.Addr().Unmap()) {
				return proxyproto.REQUIRE, nil
			}
		}
	}
	return proxyproto.REJECT, nil
}

// Shutdown marks the server not ready (/readyz), keeps serving for
// DrainDelay, then stops accepting, closes connections still in their
// handshake (they have sent no request yet: net/http would not serve one
// read after its own shutdown began), lets requests in flight finish until
// ctx ends, and closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	if s.cfg.DrainDelay > 0 {
		s.log.Info("draining: not ready, still serving", "for", s.cfg.DrainDelay.String())
		select {
		case <-time.After(s.cfg.DrainDelay):
		case <-ctx.Done():
		}
	}
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	s.listenersMu.Lock()
	hls := s.listeners
	s.listenersMu.Unlock()
	for _, hl := range hls {
		hl.Close()
		hl.wait()
	}
	if s.cfg.Redis != nil {
		s.cfg.Redis.Close()
	}
	return err
}
