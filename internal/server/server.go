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

	"github.com/req-mtls/req-mtls/internal/clienthello"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// Supported is the set of flags this server acts on.
var Supported = tlsflags.Must(tlsflags.RequestMTLS)

// Config configures a Server. The zero value of every optional field is a
// sensible default.
type Config struct {
	Files  Files
	Policy Policy

	// HandshakeTimeout bounds a TLS handshake from the first byte read
	// (default 10 s). ReadHeaderTimeout and IdleTimeout are net/http's
	// (defaults 10 s and 120 s). MaxHeaderBytes defaults to 64 KiB and
	// MaxBodyBytes to 1 MiB.
	HandshakeTimeout  time.Duration
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	MaxBodyBytes      int64

	// KeyLog receives TLS secrets in NSS key log format, for debugging.
	KeyLog io.Writer
	// Logger receives handshake errors and reloads (default slog.Default()).
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
	reloadMu   sync.Mutex
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, ticketKeys: &tls.Config{Time: cfg.Now}}
	st, err := loadState(cfg.Files)
	if err != nil {
		return nil, err
	}
	s.buildConfigs(st)
	s.state.Store(st)
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

// buildConfigs makes the two TLS configs of st, for unflagged and flagged
// clients. They are built once per load, never per connection, and never
// modified afterwards.
func (s *Server) buildConfigs(st *state) {
	for _, flagged := range []bool{false, true} {
		policy := s.cfg.Policy
		roots := st.roots(flagged)
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
		if policy.asks(flagged) {
			// Verification is ValidateClientCert's alone (in
			// VerifyConnection), so crypto/tls is only told whether a
			// certificate must come. ClientCAs fills the
			// certificate_authorities extension of CertificateRequest.
			cfg.ClientAuth = tls.RequestClientCert
			if policy.requires(flagged) {
				cfg.ClientAuth = tls.RequireAnyClientCert
			}
			cfg.ClientCAs = roots
		}
		if policy.enforces() {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return nil // crypto/tls already enforced whether one must come
				}
				if err := ValidateClientCert(cs.PeerCertificates, roots, s.cfg.Now()); err != nil {
					return fmt.Errorf("client certificate rejected: %w", err)
				}
				return nil
			}
		}
		// Resumption (RFC 8446, Section 4.6.1 and 2.2): a resumed session
		// keeps the identity of the session it resumes, and no
		// CertificateRequest is sent with a PSK. So a flagged client must not
		// resume a session that had no certificate: it would end up
		// unauthenticated while asking to be asked. Tickets are tagged
		// with whether a certificate came; a flagged client's untagged or
		// certificate-less ticket is declined, which gives it a full
		// handshake with a CertificateRequest. A ticket whose certificate
		// was accepted under other trust stores (before a reload) is
		// declined too, so that the certificate is checked again.
		gen := st.gen
		cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
			ss.Extra = append(ss.Extra, ticketTag(len(cs.PeerCertificates) > 0, gen))
			return s.ticketKeys.EncryptTicket(cs, ss)
		}
		cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
			ss, err := s.ticketKeys.DecryptTicket(identity, cs)
			if err != nil || ss == nil {
				return nil, err
			}
			hasCert, tagGen, ok := parseTicketTag(ss.Extra)
			switch {
			case !ok:
				return nil, nil
			case flagged && !hasCert:
				return nil, nil
			case hasCert && tagGen != gen:
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
// from the clienthello.Conn under crypto/tls (ClientHelloInfo.Conn):
// ClientHelloInfo.Extensions lists extension IDs only, never their data.
func (s *Server) configForClient(chi *tls.ClientHelloInfo) (*tls.Config, error) {
	st := s.state.Load()
	return st.configs[b2i(flagged(chi.Conn))], nil
}

// flagged reports whether the client on c set the request-mTLS flag.
func flagged(c net.Conn) bool {
	hc, ok := c.(*clienthello.Conn)
	return ok && hc.Flags().Has(tlsflags.RequestMTLS)
}

// Reload loads the files again. On any error the running state is kept and
// the error is logged and returned.
func (s *Server) Reload(reason string) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	st, err := loadState(s.cfg.Files)
	if err != nil {
		s.log.Error("reload failed; keeping the last good certificates", "trigger", reason, "err", err)
		return err
	}
	s.buildConfigs(st)
	s.state.Store(st)
	s.log.Info("reloaded certificates", "trigger", reason, "generation", st.gen,
		"cert_expires", st.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// Serve accepts connections on l (a plain TCP listener) until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	hl := newHandshakeListener(clienthello.NewListener(l), s.base, s.cfg.HandshakeTimeout, s.log)
	err := s.http.Serve(hl)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets requests in flight finish until ctx ends,
// then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	return err
}
