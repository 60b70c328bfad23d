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
	"cmp"
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
	"github.com/req-mtls/req-mtls/internal/policy"
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
	// gateway, /debug, the access log and the metrics.
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

	// headerHold, for tests, replaces headerHold; readFrameSize, for
	// benchmarks, replaces x/net's HTTP/2 read frame size.
	headerHold    time.Duration
	readFrameSize uint32
	// PagesPath, with a Handler, mounts the server's own pages under this
	// path (ending in "/") in front of it; empty leaves them out.
	PagesPath string
	// AccessLog, if set, receives a line per request.
	AccessLog *slog.Logger
	// Hosts names the site that Config's own fields describe (Files,
	// Policy, Handler, Signatures, Rules), when Sites lists others.
	// Sites are more sites served on the same listeners, each with its
	// own certificate, client authentication, handler, signatures and
	// rules (sites.go): a handshake is served by the site whose Hosts
	// hold its SNI, the first (Config's own) when none does, and a
	// request whose Host names another site than its handshake's is
	// answered 421 Misdirected Request.
	Hosts []string
	Sites []Site
	// Rules are the rules in force at the start (SetRules replaces
	// them), Limiter the buckets of their limit rules (default: this
	// process's, policy.NewLocal).
	Rules   *policy.Engine
	Limiter policy.Limiter
	// AccessLogDropped, if set, counts the access log's lines dropped
	// (metrics.AddAccessLog).
	AccessLogDropped func() (failed, behind uint64)
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
	sites        []*site // the first is Config's own (sites.go)
	limiter      policy.Limiter
	verifiers    []*webbotauth.Verifier // the sites' signature verifiers, fetched again at Reload
	directory    http.Handler           // the key directory of Config.DirectoryKeys, if any
	inFlight     atomic.Int64           // handshakes in progress, over every listener
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
	m = metrics.New(func() ([]*x509.Certificate, map[string][]*x509.Certificate) { return s.certificates() },
		func() []auth.CRLInfo { return s.crls() },
		func() float64 { return float64(s.inFlight.Load()) }, func() float64 { return float64(a.HelloBytes()) })
	if cfg.AccessLogDropped != nil {
		m.AddAccessLog(cfg.AccessLogDropped)
	}
	newAuth := func(files Files, policy auth.Policy, sigs *webbotauth.Verifier) (*auth.Authenticator, error) {
		// A site's agents vouch for client certificates naming them.
		var agents auth.AgentVoucher
		if sigs != nil {
			agents = sigs
		}
		return auth.New(auth.Config{
			OnReload: m.Reload,
			Policy:   policy,
			CertFile: files.Cert, KeyFile: files.Key,
			ClientCAFile: files.ClientCA, BotCAFile: files.BotCA, ClientCRLFile: files.ClientCRL,
			Agents: agents, DenyFile: files.Deny,
			TicketKeysFile:  cfg.Files.TicketKeys,
			RecheckInterval: cfg.RecheckInterval,
			Logger:          cfg.Logger,
			Now:             cfg.Now,
			MaxHelloBytes:   cfg.MaxHelloBytes,
			// The handshake listener bounds handshakes itself.
			HandshakeTimeout: -1,
		})
	}
	a, err := newAuth(cfg.Files, cfg.Policy, cfg.Signatures)
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
	s = &Server{cfg: cfg, log: cfg.Logger, auth: a, hsLimit: newRateLimiter(10, 50), refusedLimit: newRateLimiter(1, 5), metrics: m, acme: manager}
	if cfg.PagesPath != "" && (!strings.HasPrefix(cfg.PagesPath, "/") || !strings.HasSuffix(cfg.PagesPath, "/")) {
		return nil, fmt.Errorf("pages path %q must start and end with /", cfg.PagesPath)
	}
	if cfg.Redis != nil {
		cfg.Redis.SetObserver(m.AddRedis(cfg.Redis.Sent))
	}
	if len(cfg.DirectoryKeys) > 0 {
		// A bot operator's site: its key directory, signed.
		if s.directory, err = webbotauth.DirectoryHandler(cfg.DirectoryKeys, nil); err != nil {
			return nil, err
		}
	}
	s.limiter = cfg.Limiter
	if s.limiter == nil {
		s.limiter = policy.NewLocal(0)
	}
	sites := append([]Site{{Hosts: cfg.Hosts, Files: cfg.Files, Policy: cfg.Policy, Handler: cfg.Handler, Signatures: cfg.Signatures, Rules: cfg.Rules}}, cfg.Sites...)
	for i, sc := range sites {
		sa := a
		if i > 0 {
			if sc.Files.Cert == "" && sc.Files.Key == "" && manager == nil {
				return nil, fmt.Errorf("sites[%d] %q: a server certificate and key are required", i, strings.Join(sc.Hosts, ","))
			}
			if sa, err = newAuth(sc.Files, sc.Policy, sc.Signatures); err != nil {
				return nil, fmt.Errorf("sites[%d] %q: %w", i, strings.Join(sc.Hosts, ","), err)
			}
		}
		st := &site{hosts: lowerAll(sc.Hosts), auth: sa, tls: sa.TLSConfig(base)}
		st.rules.Store(sc.Rules)
		if v := sc.Signatures; v != nil {
			m.AddAgents(v)
			// A signature's @authority may be any name of the site's
			// certificate in force, not only the SNI.
			v.SetSiteCertificate(func() *x509.Certificate { leaf, _ := sa.Certificates(); return leaf })
			v.SetDenyList(sa.Denied)
			// A key an agent no longer lists vouches for no open
			// connection either.
			v.OnKeysDropped(func(agent string) { sa.Recheck("keys dropped by agent " + agent) })
			s.verifiers = append(s.verifiers, v)
		}
		st.handler = observe(s.misdirected(st, s.enforce(st, s.siteHandler(sa, sc.Handler))), m, cfg.AccessLog, sc.Signatures,
			func(r *http.Request) *policy.Advance { return s.advance(st, r) })
		s.sites = append(s.sites, st)
	}
	if err := checkHosts(s.sites); err != nil {
		return nil, err
	}
	h := s.sites[0].handler
	s.base = s.sites[0].tls
	if len(s.sites) > 1 {
		h = http.HandlerFunc(s.serveSite)
		s.base = s.dispatchTLS()
	}
	s.http = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		ConnContext:       ConnContext,
	}
	if err := serveHTTP2(s.http, cmp.Or(cfg.headerHold, headerHold), cfg.readFrameSize); err != nil {
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

// Reload loads every certificate file of every site again (see
// auth.Authenticator.Reload) and asks for a fetch of every agent's key
// directory.
func (s *Server) Reload(trigger string) error {
	for _, v := range s.verifiers {
		v.RefreshNow()
	}
	var errs []error
	for _, st := range s.sites {
		errs = append(errs, st.auth.Reload(trigger))
	}
	return errors.Join(errs...)
}

// Watch reloads certificate files as they change, until ctx ends.
func (s *Server) Watch(ctx context.Context) error {
	if len(s.sites) == 1 {
		return s.auth.Watch(ctx)
	}
	errs := make([]error, len(s.sites))
	var wg sync.WaitGroup
	for i, st := range s.sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = st.auth.Watch(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

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
