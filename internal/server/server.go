// Package server is the request-mTLS server: a stock crypto/tls server that
// sends a CertificateRequest to clients that set the request-mTLS flag
// (draft-jhoyla-req-mtls-flag-02, flag 80 of draft-ietf-tls-tlsflags), and
// to no one else, and reports what it saw at /debug.
//
// Client authentication is decided per connection in
// tls.Config.GetConfigForClient, from the flags that the clienthello
// inspection listener read out of the ClientHello.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// Supported is the set of flags this server acts on.
var Supported = tlsflags.Must(tlsflags.RequestMTLS)

// Config configures a Server. The zero value of every optional field is a
// sensible default.
type Config struct {
	Files  Files
	Policy Policy

	// HandshakeTimeout bounds the TLS handshake, counted from the moment
	// the connection is accepted (default 10 s): a client that connects
	// and stays silent is cut off after it. ReadHeaderTimeout and
	// IdleTimeout are net/http's (defaults 10 s and 120 s).
	// MaxHeaderBytes defaults to 64 KiB and MaxBodyBytes to 1 MiB.
	HandshakeTimeout  time.Duration
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	MaxBodyBytes      int64

	// RecheckInterval is how often Watch compares the files with what
	// was loaded even when no file event came, as a backstop for events
	// that never arrive (default 1 minute).
	RecheckInterval time.Duration

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
	cfg        Config
	log        *slog.Logger
	state      atomic.Pointer[state]
	ticketKeys *tls.Config // owns the session ticket keys across reloads
	base       *tls.Config
	http       *http.Server

	reloadMu sync.Mutex
	stamps   map[string][32]byte // by part name: the files as last loaded or tried
	gen      uint64

	connsMu sync.Mutex
	conns   map[*conn]struct{} // open connections that hold a client certificate

	listenersMu sync.Mutex
	listeners   []*handshakeListener
}

// New loads the files in cfg and returns a Server ready to Serve.
func New(cfg Config) (*Server, error) {
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
	if cfg.RecheckInterval <= 0 {
		cfg.RecheckInterval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, ticketKeys: &tls.Config{Time: cfg.Now},
		stamps: map[string][32]byte{}, conns: map[*conn]struct{}{},
	}
	st := &state{}
	for _, p := range s.parts() {
		s.stamps[p.name] = stamp(p.files)
		if err := p.load(st); err != nil {
			return nil, err
		}
	}
	s.publish(st)
	s.base = &tls.Config{
		GetConfigForClient: s.configForClient,
		NextProtos:         []string{"h2", "http/1.1"},
	}
	s.http = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		ConnContext:       withConn,
	}
	return s, nil
}

// tls12Suites are the TLS 1.2 suites allowed: ECDHE with AEAD only. TLS 1.3
// suites are not configurable in crypto/tls and are all AEAD.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// publish builds the TLS configs of st and makes it the state in force.
func (s *Server) publish(st *state) {
	s.gen++
	st.gen = s.gen
	s.buildConfigs(st)
	s.state.Store(st)
}

// buildConfigs makes the two TLS config templates of st, for unflagged and
// flagged clients. They are built once per load and never modified; each
// connection gets a clone that records its decision (configForClient).
func (s *Server) buildConfigs(st *state) {
	for _, flagged := range []bool{false, true} {
		policy := s.cfg.Policy
		cfg := &tls.Config{
			MinVersion:   tls.VersionTLS12,
			CipherSuites: tls12Suites,
			Certificates: []tls.Certificate{*st.cert},
			// Configs from GetConfigForClient do not inherit the base
			// config's NextProtos.
			NextProtos:   []string{"h2", "http/1.1"},
			KeyLogWriter: s.cfg.KeyLog,
			Time:         s.cfg.Now,
			ClientAuth:   tls.NoClientCert,
		}
		var want storeRef // the store a session's certificate must have been checked against
		if policy.asks(flagged) {
			// Verification is ValidateClientCert's alone (in
			// VerifyConnection), so crypto/tls is only told whether a
			// certificate must come. ClientCAs fills the
			// certificate_authorities extension of CertificateRequest.
			cfg.ClientAuth = tls.RequestClientCert
			if policy.requires(flagged) {
				cfg.ClientAuth = tls.RequireAnyClientCert
			}
			cfg.ClientCAs = st.storeFor(flagged).roots()
			want = st.storeFor(flagged).ref()
		}
		// Session tickets carry a sessionTag; acceptTicket says which
		// ones may resume here, and why.
		cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
			ss.Extra = append(ss.Extra, sessionTag{hasCert: len(cs.PeerCertificates) > 0, store: want}.marshal())
			return s.ticketKeys.EncryptTicket(cs, ss)
		}
		cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
			ss, err := s.ticketKeys.DecryptTicket(identity, cs)
			if err != nil || ss == nil {
				return nil, err
			}
			tag, ok := parseSessionTag(ss.Extra)
			if !acceptTicket(tag, ok, flagged, want) {
				return nil, nil
			}
			return ss, nil
		}
		st.configs[b2i(flagged)] = cfg
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// configForClient picks the config for one connection. The flag bytes come
// from the inspection under crypto/tls (ClientHelloInfo.Conn is the
// server's *conn): ClientHelloInfo.Extensions lists extension IDs only,
// never their data. The template is cloned so that VerifyConnection can
// record the decision on this connection.
func (s *Server) configForClient(chi *tls.ClientHelloInfo) (*tls.Config, error) {
	st := s.state.Load()
	c, _ := chi.Conn.(*conn)
	isFlagged := c != nil && c.flagged()
	cfg := st.configs[b2i(isFlagged)].Clone()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return s.decide(c, st, isFlagged, cs)
	}
	return cfg, nil
}

// decide makes the client-auth decision of a handshake (full or resumed:
// crypto/tls calls VerifyConnection for both), records it on c, and
// returns an error that fails the handshake when the policy enforces.
func (s *Server) decide(c *conn, st *state, isFlagged bool, cs tls.ConnectionState) error {
	policy := s.cfg.Policy
	d := &Decision{
		Policy:  policy,
		Flagged: isFlagged,
		// With a PSK no CertificateRequest is sent (RFC 8446, Section
		// 4.3.2); a resumed session brings the certificate of the one
		// it resumes.
		Requested: policy.asks(isFlagged) && !cs.DidResume,
		Resumed:   cs.DidResume,
		Chain:     cs.PeerCertificates,
	}
	if len(d.Chain) > 0 {
		store := st.storeFor(isFlagged)
		d.Store = store.ref().kind
		d.Err = ValidateClientCert(d.Chain, store.roots(), s.cfg.Now())
	}
	if c != nil {
		c.decision.Store(d)
		if len(d.Chain) > 0 {
			c.track()
		}
	}
	if d.Err != nil && policy.enforces() {
		return fmt.Errorf("client certificate rejected: %w", d.Err)
	}
	return nil
}

// Reload loads every part again, whether its files changed or not. A part
// that fails keeps its last good state; the others take their new one.
// Failures are logged and returned.
func (s *Server) Reload(trigger string) error {
	return s.reload(trigger, true)
}

// reload loads the parts whose files changed since they were last loaded
// or tried (all of them with force), publishes a new state if any part
// took, and closes connections that the new trust stores no longer accept.
func (s *Server) reload(trigger string, force bool) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.state.Load()
	next := &state{cert: old.cert, client: old.client, bot: old.bot}
	var errs []error
	var took []string
	for _, p := range s.parts() {
		sum := stamp(p.files)
		if !force && sum == s.stamps[p.name] {
			continue
		}
		s.stamps[p.name] = sum
		if err := p.load(next); err != nil {
			s.log.Error("reload failed; keeping the last good certificates", "trigger", trigger, "part", p.name, "err", err)
			errs = append(errs, err)
			continue
		}
		took = append(took, p.name)
	}
	if len(took) == 0 {
		return errors.Join(errs...)
	}
	s.publish(next)
	s.log.Info("reloaded certificates", "trigger", trigger, "generation", next.gen, "parts", took,
		"cert_expires", next.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	if next.client != old.client || next.bot != old.bot {
		s.recheck(next)
	}
	return errors.Join(errs...)
}

// recheck applies new trust stores to open connections: under a policy that
// enforces, a connection whose certificate no longer validates is closed,
// so that no request is served on a certificate the server would refuse
// now. Under request, connections stay and /debug reports the handshake's
// decision (and, in JSON, whether it still validates).
func (s *Server) recheck(st *state) {
	if !s.cfg.Policy.enforces() {
		return
	}
	s.connsMu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connsMu.Unlock()
	now := s.cfg.Now()
	for _, c := range conns {
		d := c.Decision()
		if d == nil || len(d.Chain) == 0 {
			continue
		}
		if err := ValidateClientCert(d.Chain, st.storeFor(d.Flagged).roots(), now); err != nil {
			s.log.Warn("closing connection: its client certificate no longer validates",
				"remote", c.RemoteAddr().String(), "cert", certName(d.Chain[0]), "err", err)
			c.Close()
		}
	}
}

// Serve accepts connections on l (a plain TCP listener) until Shutdown.
func (s *Server) Serve(l net.Listener) error {
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

// Shutdown stops accepting, closes connections still in their handshake
// (they have sent no request yet), lets requests in flight finish until ctx
// ends, then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
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
	return err
}
