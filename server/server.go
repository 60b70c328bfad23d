// Package server is the site side of request mTLS: an Authenticator that
// decides client authentication on any crypto/tls server (a certificate is
// asked for only when the ClientHello sets flag 80, or always under
// PolicyAlways), a whole Server as cmd/server runs it, and a gateway that
// forwards each request's verified identity to an origin.
//
// It is a package of its own so that crawlers, which import the root
// package for its Transport, link none of what servers need (Prometheus,
// ACME, the PROXY protocol, file watching).
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
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/auth"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/fleetstate"
	"github.com/req-mtls/req-mtls/internal/gateway"
	"github.com/req-mtls/req-mtls/internal/httpsig"
	"github.com/req-mtls/req-mtls/internal/metrics"
	"github.com/req-mtls/req-mtls/internal/policy"
	srv "github.com/req-mtls/req-mtls/internal/server"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// ErrRevoked and ErrCRLExpired are wrapped by Info.Err for a certificate
// listed in a CRL of ClientCRLFile, or whose issuer's CRL is past its
// nextUpdate.
var (
	ErrRevoked    = auth.ErrRevoked
	ErrCRLExpired = auth.ErrCRLExpired
	// ErrDenied is wrapped by Info.Err for a certificate that DenyFile
	// lists.
	ErrDenied = auth.ErrDenied
)

// Policy says when a server asks for a client certificate and what it does
// with one.
type Policy int

const (
	// PolicyRequest asks flagged clients for a certificate and accepts
	// whatever comes (or nothing); Info says whether it validated. This
	// is what the reference server does.
	PolicyRequest Policy = iota
	// PolicyVerify asks flagged clients; a certificate that does not
	// validate fails the handshake (bad_certificate). None is fine.
	PolicyVerify
	// PolicyRequire asks flagged clients, who must present a valid
	// certificate (certificate_required otherwise).
	PolicyRequire
	// PolicyAlways is classic mTLS: every client is asked and must
	// present a valid certificate, flag or not.
	PolicyAlways
)

// ParsePolicy parses "request", "verify", "require" or "always".
func ParsePolicy(s string) (Policy, error) {
	p, err := auth.ParsePolicy(s)
	return Policy(p), err
}

func (p Policy) String() string { return auth.Policy(p).String() }

// MarshalText and UnmarshalText write and read a Policy by its name, for
// flags and configuration files.
func (p Policy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p *Policy) UnmarshalText(b []byte) error {
	v, err := ParsePolicy(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// A Rule is one of a site's rules: a name, a match (every key given must
// hold: path prefix, method, cert valid|invalid|none, store
// client|bot|agent, san, cert_sha256, agent, signature valid|invalid|none,
// identity_match), an action (allow; deny with status and reason; require
// with what: cert|signature|both; limit with rate and burst) and shadow,
// which only records what the rule would have done. docs/site.md describes
// each key.
type Rule = policy.Rule

// RuleMatch is a Rule's match.
type RuleMatch = policy.Match

// Config configures an Authenticator, and a Server. Every field is
// optional; the zero value asks flagged clients for a certificate and
// validates it against nothing (so Info reports it as not validated).
type Config struct {
	// The yaml tags are the keys of bin/server's -config file, whose
	// flags have the same names with '-' for '_' (docs/site.md).

	Policy Policy `yaml:"client_auth"`

	// CertFile and KeyFile name the server's certificate chain and key
	// (PEM), reloaded when they change. Without them the base config
	// given to TLSConfig provides the certificate (Server needs them).
	CertFile string `yaml:"cert"`
	KeyFile  string `yaml:"key"`
	// ClientCAFile is a PEM bundle of CA certificates that client
	// certificates must chain to. BotCAFile, if set, is the store for
	// flagged clients alone: they are checked against it and never
	// against ClientCAFile. A bundle entry that is not a CA is refused.
	ClientCAFile string `yaml:"client_cacert"`
	BotCAFile    string `yaml:"bot_cacert"`
	// ClientCRLFile holds certificate revocation lists (RFC 5280), PEM
	// or DER, each signed by a CA of the client or bot store (another is
	// refused at load, naming the file and the issuer). A listed
	// certificate does not validate (Info.Err wraps ErrRevoked; under
	// PolicyVerify, PolicyRequire and PolicyAlways the handshake fails
	// with certificate_revoked), and neither does any certificate of an
	// issuer whose CRL is past its nextUpdate (ErrCRLExpired): fail
	// closed, as nginx and OpenSSL. Reloaded like the other files, and
	// open connections it revokes are closed under enforcing policies.
	ClientCRLFile string `yaml:"client_crl"`
	// DenyFile holds a deny list, revoking without any CA's key: lines of
	// cert-sha256:HEX (a certificate), spki-sha256:HEX (every certificate
	// of a key), jwk:THUMBPRINT (a signing key) and agent:URL (an agent,
	// on both layers), with # comments; gencert -fingerprint prints them.
	// A denied certificate does not validate (Info.Err wraps ErrDenied;
	// certificate_revoked under the enforcing policies, and open
	// connections are closed); a denied key or agent's signature is
	// invalid, reason "denied". Reloaded like the other files; it applies
	// to every site.
	DenyFile string `yaml:"deny"`
	// TicketKeysFile holds session ticket keys shared by the instances of
	// a fleet, so that a session made on one resumes on another: one key
	// a line, 32 random bytes in standard base64 (`openssl rand -base64
	// 32`), # comments allowed; the first encrypts, all decrypt. It is
	// reloaded like the certificates. Tickets say which trust-store
	// contents accepted their certificate, so instances that load the
	// same files agree. Empty: keys of this process alone.
	TicketKeysFile string `yaml:"ticket_keys"`

	// RecheckInterval is how often Watch compares the files with what was
	// loaded when no file event came (default 1 minute).
	RecheckInterval time.Duration `yaml:"-"`
	// Logger receives reloads, closed connections and, for Server,
	// handshake failures and a debug line per connection (default
	// slog.Default()).
	Logger *slog.Logger `yaml:"-"`
	// Now is the clock for certificate validity (default time.Now); for
	// tests.
	Now func() time.Time `yaml:"-"`

	// HandshakeTimeout bounds a TLS handshake from the accept (default
	// 10 s): a connection from Listener whose handshake has not reached
	// the client-auth decision by then is closed. MaxHelloBytes bounds
	// the bytes all connections hold at once while their ClientHellos
	// are read (default 32 MiB); past it a ClientHello is refused with
	// an internal_error alert. Negative values turn either off.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	MaxHelloBytes    int64         `yaml:"max_hello_memory"`

	// The fields below are Server's alone.

	// MaxHandshakes bounds the handshakes in progress at once (default
	// 1024); a connection accepted past it is closed at once, counted in
	// reqmtls_handshake_failures_total{reason="too_many_handshakes"}.
	// ReadHeaderTimeout and IdleTimeout are net/http's (defaults 10 s and
	// 2 minutes).
	MaxHandshakes     int           `yaml:"max_handshakes"`
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	// ACME, if set, replaces CertFile and KeyFile for Server: the
	// certificate is obtained from an ACME server, cached and renewed
	// while the server runs.
	ACME *ACMEConfig `yaml:"-"`
	// DrainDelay is how long Shutdown keeps serving while /readyz already
	// answers 503, so that a load balancer's health checks take the
	// instance out of rotation before it stops accepting (default 0).
	DrainDelay time.Duration `yaml:"drain_delay"`
	// ProxyProtocolFrom lists the load balancers' addresses: connections
	// from them must start with a PROXY protocol header (v1 or v2, as
	// HAProxy's send-proxy and send-proxy-v2 write), and the client
	// address it carries is the one the server logs, reports and
	// forwards; from any other address a header is refused.
	ProxyProtocolFrom []netip.Prefix `yaml:"proxy_protocol_from"`
	// Handler serves requests (default: the server's own pages, the index
	// at / and the connection report at /debug, as DebugHandler); a
	// gateway from NewGateway, say. PagesPath, with a Handler, mounts
	// the server's own pages under that path (ending in "/") in front of
	// it; empty leaves them out.
	Handler   http.Handler `yaml:"-"`
	PagesPath string       `yaml:"pages"`
	// AccessLog, if set, receives one line per request: client address,
	// flags, certificate requested, subject, first DNS name, SHA-256,
	// validation result and error, resumed, method, host, path, status,
	// bytes, duration and the origin's time. NewAccessLog makes one that
	// writes these lines at a fraction of a generic slog handler's cost.
	AccessLog *slog.Logger `yaml:"-"`
	// AccessLogDropped, if set, is read at every metrics scrape: the
	// access log's lines dropped so far, because a write failed or
	// because lines came faster than the file took them (as
	// logbuf.Writer.Dropped counts them).
	AccessLogDropped func() (failed, behind uint64) `yaml:"-"`
	// KeyLog receives TLS secrets in NSS key log format, for debugging.
	KeyLog io.Writer `yaml:"-"`
	// SignatureDirectoryKeyFiles, for a bot operator's site, are the keys
	// whose Web Bot Auth directory the server serves at
	// /.well-known/http-message-signatures-directory: Ed25519 signing keys
	// (PEM or JWK) and the ECDSA P-256 key of the agent's TLS client
	// certificate (PEM, as gencert -agent writes agent.key), so that sites
	// listing the agent trust that certificate by its key. The response is
	// their public JWKS with the directory's media type, signed by every
	// key and cacheable as long as its signatures last (5 minutes).
	SignatureDirectoryKeyFiles []string `yaml:"signature_directory"`
	// SignatureAgentsFile lists the Web Bot Auth agents the site trusts,
	// and SignatureAgentsCAFile the roots for their directories (see
	// NewSignatureVerifier). Each agent also vouches for TLS client
	// certificates: one whose subjectAltName URI is exactly the agent's
	// URL and whose public key the agent's directory lists validates,
	// whoever issued it, as store "agent" (Info.Agent names it). With
	// it, each request's signature is verified once: a gateway tells the origin (Web-Bot-Auth-Status,
	// -Agent, -Keyid, Bot-Identity-Match), /debug?format=json reports it
	// (web_bot_auth), the access log and reqmtls_web_bot_auth_requests_total
	// count it.
	SignatureAgentsFile   string `yaml:"signature_agents"`
	SignatureAgentsCAFile string `yaml:"signature_agents_cacert"`
	// SignatureSkew is how far a signature's created may be in the future
	// and its expires in the past (default 1 minute).
	SignatureSkew time.Duration `yaml:"signature_skew"`
	// SignatureMaxValidity is how long a signature may be valid for,
	// expires - created (default 1 hour): a longer one is invalid.
	SignatureMaxValidity time.Duration `yaml:"signature_max_validity"`
	// SignatureKeysMaxStale is how long the last good keys of an agent's
	// directory stay in force past their cache lifetime while refreshes
	// fail (default 1 hour). A directory answering 404 or 410 has
	// withdrawn its keys: they go at once.
	SignatureKeysMaxStale time.Duration `yaml:"signature_keys_max_stale"`

	// Redis is the URL of a Redis the fleet shares, for Server:
	// redis://[user:password@]host:port[/db], rediss:// (TLS, verified
	// against RedisCAFile or the system roots), unix:///path[?db=N], a
	// Cluster's seed nodes (redis://host:port?addr=host2:port2&...) or
	// the Sentinels of a master (...&master_name=NAME). A verified
	// signature's nonce is then stored there until the signature expires
	// (plus SignatureSkew), so that a replay at any instance is refused,
	// and in this process as well; the buckets of limit rules live there
	// too, so that the fleet together admits a rule's rate. Each call is
	// bounded by RedisTimeout (default 50 ms); while Redis is slow or
	// unreachable, this process's own state answers (one log line when
	// the outage starts, one when it ends; reqmtls_redis_up,
	// reqmtls_redis_errors_total and reqmtls_redis_request_duration_seconds
	// tell, and reqmtls_redis_sends_total how many sends to Redis the
	// calls took), and a check each second takes Redis back when it
	// answers.
	// No request fails because of Redis.
	Redis        string        `yaml:"redis"`
	RedisCAFile  string        `yaml:"redis_cacert"`
	RedisTimeout time.Duration `yaml:"redis_timeout"`

	// Rules are the site's rules, in order, the first that matches
	// deciding (see Rule); none matching allows the request. Each
	// request's verdict is in the access log (rule, action) and counted
	// in reqmtls_rule_requests_total. Server.SetRules replaces them on a
	// running server.
	Rules []Rule `yaml:"rules"`

	// Sites, if set, are the sites served on the address, each with
	// its own names (Hosts, matched against SNI and Host), certificate,
	// client authentication, origin, agents and rules: a handshake gets
	// the site whose Hosts hold its SNI, the first when none does (as
	// nginx's default server), and a request whose Host names another
	// site than its handshake's is answered 421 Misdirected Request.
	// The keys Config gives are the defaults of every site's; with
	// Sites, Config's own are no site of their own.
	Sites []Site `yaml:"sites"`
}

// A Site is one of Config.Sites. A key left out (empty, or nil) is
// Config's.
type Site struct {
	// Hosts are the site's names, without regard to case;
	// "*.example.com" matches one label in front of example.com.
	Hosts []string `yaml:"hosts"`

	CertFile      string  `yaml:"cert"`
	KeyFile       string  `yaml:"key"`
	ClientCAFile  string  `yaml:"client_cacert"`
	BotCAFile     string  `yaml:"bot_cacert"`
	ClientCRLFile string  `yaml:"client_crl"`
	Policy        *Policy `yaml:"client_auth"`

	// SignatureAgentsFile lists the agents whose Web Bot Auth
	// signatures the site verifies (with Config's
	// SignatureAgentsCAFile and SignatureSkew).
	SignatureAgentsFile string `yaml:"signature_agents"`
	// Upstream is the site's origin, for bin/server, which makes the
	// site's Handler a gateway to it (with the rest of its
	// GatewayConfig); Go programs set Handler.
	Upstream string       `yaml:"upstream"`
	Handler  http.Handler `yaml:"-"`
	// Rules are the site's rules; nil is Config's, an empty list none.
	Rules []Rule `yaml:"rules"`
}

// Resolved returns the site as served: each key it leaves out filled from
// c.
func (st Site) Resolved(c Config) Site {
	if st.CertFile == "" && st.KeyFile == "" {
		st.CertFile, st.KeyFile = c.CertFile, c.KeyFile
	}
	for _, f := range []struct {
		site *string
		top  string
	}{
		{&st.ClientCAFile, c.ClientCAFile}, {&st.BotCAFile, c.BotCAFile}, {&st.ClientCRLFile, c.ClientCRLFile},
		{&st.SignatureAgentsFile, c.SignatureAgentsFile},
	} {
		if *f.site == "" {
			*f.site = f.top
		}
	}
	if st.Policy == nil {
		st.Policy = &c.Policy
	}
	if st.Handler == nil {
		st.Handler = c.Handler
	}
	if st.Rules == nil {
		st.Rules = c.Rules
	}
	return st
}

// SitesOf returns the sites c describes, resolved: Config.Sites, or the
// one site of Config's own keys.
func (c Config) SitesOf() []Site {
	if len(c.Sites) == 0 {
		p := c.Policy
		return []Site{{CertFile: c.CertFile, KeyFile: c.KeyFile, ClientCAFile: c.ClientCAFile, BotCAFile: c.BotCAFile,
			ClientCRLFile: c.ClientCRLFile, Policy: &p, SignatureAgentsFile: c.SignatureAgentsFile, Handler: c.Handler, Rules: c.Rules}}
	}
	out := make([]Site, len(c.Sites))
	for i, st := range c.Sites {
		out[i] = st.Resolved(c)
	}
	return out
}

// verifierConfig is what a SignatureVerifier takes of c.
func (c Config) verifierConfig() webbotauth.Config {
	return webbotauth.Config{Skew: c.SignatureSkew, MaxValidity: c.SignatureMaxValidity, MaxStale: c.SignatureKeysMaxStale, Now: c.Now}
}

func (c Config) auth() auth.Config {
	return auth.Config{
		Policy:   auth.Policy(c.Policy),
		CertFile: c.CertFile, KeyFile: c.KeyFile,
		ClientCAFile: c.ClientCAFile, BotCAFile: c.BotCAFile, ClientCRLFile: c.ClientCRLFile,
		DenyFile:        c.DenyFile,
		TicketKeysFile:  c.TicketKeysFile,
		RecheckInterval: c.RecheckInterval,
		Logger:          c.Logger,
		Now:             c.Now,

		HandshakeTimeout: c.HandshakeTimeout,
		MaxHelloBytes:    c.MaxHelloBytes,
	}
}

// An Authenticator decides client authentication for request mTLS on any
// crypto/tls server. It is safe for concurrent use; one Authenticator may
// serve several listeners and configs.
type Authenticator struct {
	a       *auth.Authenticator
	metrics *metrics.AuthMetrics // nil for a Server's own
}

// NewAuthenticator loads the files named in cfg; any failure is an error
// that names the file and why. With SignatureAgentsFile, the agents listed
// vouch for client certificates that name them (store "agent"); signatures
// are verified by a SignatureVerifier's Middleware.
func NewAuthenticator(cfg Config) (*Authenticator, error) {
	ac := cfg.auth()
	var agents *webbotauth.Verifier
	if cfg.SignatureAgentsFile != "" {
		// The agents vouch for certificates that name them.
		v, err := newSignatureVerifier(cfg.SignatureAgentsFile, cfg.SignatureAgentsCAFile, cfg.verifierConfig(), cfg.Logger)
		if err != nil {
			return nil, err
		}
		agents, ac.Agents = v.v, v.v
	}
	var a *auth.Authenticator
	m := metrics.NewAuth(func() (*x509.Certificate, map[string][]*x509.Certificate) { return a.Certificates() },
		func() []auth.CRLInfo { return a.CRLs() })
	ac.OnDecision, ac.OnReload = m.Decision, m.Reload
	a, err := auth.New(ac)
	if err != nil {
		return nil, err
	}
	if agents != nil {
		agents.OnKeysDropped(func(agent string) { a.Recheck("keys dropped by agent " + agent) })
	}
	return &Authenticator{a: a, metrics: m}, nil
}

// Collector returns the Authenticator's Prometheus metrics, to register in
// your own registry: reqmtls_decisions_total (by flagged, cert_requested,
// cert and resumed), reqmtls_reloads_total, reqmtls_certificate_not_after_seconds
// and, with ClientCRLFile, reqmtls_crl_next_update_seconds. (A Server
// serves its own, with handshake failures and more, on its AdminHandler.)
// It is nil for a Server's Authenticator.
func (a *Authenticator) Collector() prometheus.Collector {
	if a.metrics == nil {
		return nil
	}
	return a.metrics
}

// Listener wraps l so that the flags of each connection's ClientHello can
// be read. Serve TLS on it with a config from TLSConfig: without it, no
// connection is seen as flagged, and since the handshake is known to be
// done only through TLSConfig's VerifyConnection, every connection is
// closed at HandshakeTimeout.
func (a *Authenticator) Listener(l net.Listener) net.Listener { return a.a.NewListener(l) }

// WrapConn is Listener for one connection accepted by other means.
func (a *Authenticator) WrapConn(c net.Conn) net.Conn { return a.a.WrapConn(c) }

// TLSConfig returns a server config built on base (nil for none). It keeps
// what base says of certificates (unless CertFile is set), ALPN, curves,
// cipher suites and the rest, and takes over:
//
//   - GetConfigForClient: it decides per connection; base's own, if set, is
//     called first and its result built on.
//   - ClientAuth and ClientCAs, from the policy and the stores.
//   - VerifyConnection: the certificate is checked and the decision
//     recorded; base's runs after, when the handshake goes on.
//   - WrapSession and UnwrapSession: tickets, encrypted with base's keys,
//     say whether the session had a certificate and which store accepted
//     it, so that a flagged client never resumes a session without one
//     (it gets a full handshake and a CertificateRequest) and no session
//     resumes where another store, or other roots, apply.
//
// Defaults where base is silent: ALPN h2 and http/1.1, TLS 1.2 at least,
// ECDHE with AEAD suites for TLS 1.2. The server certificate must be in
// base (Certificates or GetCertificate) or come from CertFile:
// certificates that http.Server.ServeTLS loads from its certFile and
// keyFile arguments never reach the configs built here (pass "", ""), and
// a handshake without a certificate fails with an error saying so. base
// must not be modified afterwards, nor the config returned.
//
// crypto/tls is told only whether to ask for a certificate (ClientAuth
// RequestClientCert or RequireAnyClientCert): the verification is the
// Authenticator's, so http.Request.TLS.VerifiedChains stays empty; read
// RequestInfo(r) (Validated, Chain, Verified) instead.
//
// A base that sets ClientAuth or ClientCAs is refused: every handshake
// fails with an error saying so (and it is logged once), since client
// authentication is the policy's, and building on such a base would drop
// what it asked for. For classic mTLS use PolicyAlways with ClientCAFile.
// A base capped below TLS 1.3 (MaxVersion) treats every client as
// unflagged: the flag means nothing in TLS 1.2, where a certificate
// travels in the clear. ACME's tls-alpn-01 (a client offering acme-tls/1
// alone) is answered without client authentication only when base's
// NextProtos list acme-tls/1, as autocert's configs do; elsewhere such a
// client is under the policy like any other.
func (a *Authenticator) TLSConfig(base *tls.Config) *tls.Config { return a.a.TLSConfig(base) }

// Reload loads every file again. A file that fails keeps its part's last
// good state (server certificate, client CA bundle, bot CA bundle: each on
// its own) and is logged and returned as an error. Under PolicyVerify,
// PolicyRequire and PolicyAlways, open connections whose certificate the
// new stores no longer accept are closed.
func (a *Authenticator) Reload() error { return a.a.Reload("reload") }

// Watch reloads the files that change, until ctx ends: it watches their
// directories, resolves symlinks (Kubernetes volumes swap a "..data" link
// and no event names the file), and compares contents every
// RecheckInterval as a backstop.
func (a *Authenticator) Watch(ctx context.Context) error { return a.a.Watch(ctx) }

// DebugHandler answers with the reference server's /debug lines about the
// request's own connection (text/plain), or everything as JSON with
// ?format=json. The http.Server's ConnContext must be ConnContext.
func (a *Authenticator) DebugHandler() http.Handler { return srv.DebugHandler(a.a) }

// ConnContext is for http.Server.ConnContext: it lets RequestInfo and
// DebugHandler find a request's connection.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return srv.ConnContext(ctx, c)
}

// Info is what happened on one connection: what the client sent and what
// the server decided in the handshake. The decision is made once, in the
// handshake, and never changes.
type Info struct {
	// Flags are the TLS flags of the ClientHello (empty when it sent none,
	// or did not offer TLS 1.3), Codepoint the extension that carried
	// them (0 for none).
	Flags     reqmtls.Flags
	Codepoint uint16
	// Flagged reports whether Flags hold the request-mTLS flag.
	Flagged bool
	// CertRequested reports whether a CertificateRequest was sent.
	// Resumed sessions are never asked: they keep the identity of the
	// session they resume.
	CertRequested bool
	Resumed       bool
	// Chain is the client's certificate chain, leaf first (nil when none
	// came), Store the trust store it was checked against ("client",
	// "bot", "agent" for one a trusted agent vouched for, or "none" when
	// none was configured; "" without a certificate), and Err why it did not validate: nil when it did, and
	// nil too when no certificate came (Chain is empty then; Validated
	// tells the two apart).
	Chain []*x509.Certificate
	Store string
	Err   error
	// Verified is the path that validated the leaf, leaf first and root
	// last (what net/http users look for in TLS.VerifiedChains, which
	// stays empty here); nil unless the certificate validated.
	Verified []*x509.Certificate
	// Agent is the URL of the trusted agent whose key directory vouched
	// for the certificate (Store "agent"), as SignatureAgentsFile lists
	// it; empty otherwise.
	Agent string
}

// Validated reports whether a certificate came and validated, against the
// store named in Store: with a bot store, a flagged client's certificate
// is a bot's, an unflagged one's a client's. It is false for a nil Info.
func (i *Info) Validated() bool { return i != nil && len(i.Chain) > 0 && i.Err == nil }

// RequestInfo returns the Info of the connection behind r, or nil when the
// server's ConnContext is not ConnContext or the connection did not come
// through Listener.
func RequestInfo(r *http.Request) *Info { return connInfo(srv.ConnOf(r)) }

// ConnInfo returns the Info of c (a connection from Listener, or the
// *tls.Conn over one), or nil for other connections. Before the handshake
// it holds the flags alone.
func ConnInfo(c net.Conn) *Info { return connInfo(auth.ConnOf(c)) }

func connInfo(c *auth.Conn) *Info {
	if c == nil {
		return nil
	}
	flags, _ := reqmtls.NewFlags(c.Flags().Flags()...)
	i := &Info{Flags: flags, Codepoint: c.FlagsCodepoint(), Flagged: c.Flagged()}
	if d := c.Decision(); d != nil {
		i.CertRequested, i.Resumed = d.Requested, d.Resumed
		if len(d.Chain) > 0 {
			i.Chain, i.Store, i.Err, i.Verified, i.Agent = d.Chain, d.Store.String(), d.Err, d.Verified, d.Agent
		}
	}
	return i
}

// A Server is a whole request-mTLS HTTPS server (HTTP/2 and HTTP/1.1), as
// cmd/server runs it: handshakes complete before net/http sees a
// connection, each under HandshakeTimeout; plain HTTP on its port gets a
// 400; failed handshakes are logged once with the flags the client sent.
type Server struct {
	s *srv.Server
	a *Authenticator
}

// New loads the files in cfg (CertFile and KeyFile are required).
func New(cfg Config) (*Server, error) {
	var dirKeys []crypto.Signer
	for _, f := range cfg.SignatureDirectoryKeyFiles {
		k, err := httpsig.LoadDirectoryKey(f)
		if err != nil {
			return nil, fmt.Errorf("signature directory: %w", err)
		}
		dirKeys = append(dirKeys, k)
	}
	var shared *fleetstate.Redis
	if cfg.Redis != "" {
		rc := fleetstate.Config{URL: cfg.Redis, Timeout: cfg.RedisTimeout, Logger: cfg.Logger}
		if cfg.RedisCAFile != "" {
			pool, err := certs.LoadPool(cfg.RedisCAFile)
			if err != nil {
				return nil, fmt.Errorf("redis CA: %w", err)
			}
			rc.RootCAs = pool
		}
		var err error
		if shared, err = fleetstate.Open(rc); err != nil {
			return nil, err
		}
	}
	fail := func(err error) (*Server, error) {
		if shared != nil {
			shared.Close()
		}
		return nil, err
	}
	var lim policy.Limiter = policy.NewLocal(0)
	if shared != nil {
		// The limit rules' buckets, the fleet's.
		lim = shared.Limiter(0)
	}
	var sites []srv.Site
	for i, st := range cfg.SitesOf() {
		where := func(err error) error {
			if len(cfg.Sites) == 0 {
				return err
			}
			return fmt.Errorf("sites[%d] %q: %w", i, strings.Join(st.Hosts, ","), err)
		}
		var sigs *webbotauth.Verifier
		if st.SignatureAgentsFile != "" {
			vc := cfg.verifierConfig()
			if shared != nil {
				// Nonces the fleet's, this process's own as well.
				vc.Nonces = shared.Nonces(webbotauth.NewMemoryNonces(webbotauth.DefaultMaxNonces, cfg.Now))
			}
			v, err := newSignatureVerifier(st.SignatureAgentsFile, cfg.SignatureAgentsCAFile, vc, cfg.Logger)
			if err != nil {
				return fail(where(err))
			}
			sigs = v.v
		}
		rules, err := compileRules(st.Rules, lim, i)
		if err != nil {
			return fail(where(err))
		}
		sites = append(sites, srv.Site{Hosts: st.Hosts,
			Files:  srv.Files{Cert: st.CertFile, Key: st.KeyFile, ClientCA: st.ClientCAFile, BotCA: st.BotCAFile, ClientCRL: st.ClientCRLFile, Deny: cfg.DenyFile},
			Policy: auth.Policy(*st.Policy), Handler: st.Handler, Signatures: sigs, Rules: rules})
	}
	first := sites[0]
	first.Files.TicketKeys = cfg.TicketKeysFile
	s, err := srv.New(srv.Config{
		Redis:             shared,
		Hosts:             first.Hosts,
		Sites:             sites[1:],
		Rules:             first.Rules,
		Limiter:           lim,
		Signatures:        first.Signatures,
		DirectoryKeys:     dirKeys,
		Files:             first.Files,
		Policy:            first.Policy,
		HandshakeTimeout:  cfg.HandshakeTimeout,
		MaxHandshakes:     cfg.MaxHandshakes,
		MaxHelloBytes:     cfg.MaxHelloBytes,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		RecheckInterval:   cfg.RecheckInterval,
		Handler:           first.Handler,
		PagesPath:         cfg.PagesPath,
		ProxyProtocolFrom: cfg.ProxyProtocolFrom,
		DrainDelay:        cfg.DrainDelay,
		ACME:              (*srv.ACME)(cfg.ACME),
		AccessLog:         cfg.AccessLog,
		AccessLogDropped:  cfg.AccessLogDropped,
		KeyLog:            cfg.KeyLog,
		Logger:            cfg.Logger,
		Now:               cfg.Now,
	})
	if err != nil {
		return fail(err)
	}
	return &Server{s: s, a: &Authenticator{a: s.Auth()}}, nil
}

// bucketPrefix starts the names of the buckets of site i's limit rules
// (of Config.Sites): they are apart from those of another site's rule of
// the same name. (The first site's have none, as a server of one site.)
func bucketPrefix(i int) string {
	if i == 0 {
		return ""
	}
	return "site " + strconv.Itoa(i) + ": "
}

// compileRules compiles site i's rules, or says every problem they have.
func compileRules(rules []Rule, lim policy.Limiter, i int) (*policy.Engine, error) {
	e, probs := policy.CompileSite(rules, lim, bucketPrefix(i))
	if probs != nil {
		errs := make([]error, len(probs))
		for i, p := range probs {
			errs[i] = p
		}
		return nil, errors.Join(errs...)
	}
	return e, nil
}

// SetRules replaces the server's rules (the first site's, with
// Config.Sites: SetConfigRules sets every site's): the requests that come
// after are decided by them. Rules that do not compile are an error, every
// problem named, and the rules in force stay. Limit rules keep their
// buckets across calls as long as their names do.
func (s *Server) SetRules(rules []Rule) error {
	e, err := compileRules(rules, s.s.Limiter(), 0)
	if err != nil {
		return err
	}
	s.s.SetRules(e)
	return nil
}

// SetConfigRules puts in force the rules cfg gives each site (Config.Rules,
// or each of Config.Sites' own): all of them or, when any does not compile,
// none, every problem named. The sites themselves (their number and order)
// are the server's since New.
func (s *Server) SetConfigRules(cfg Config) error {
	var engines []*policy.Engine
	var errs []error
	for i, st := range cfg.SitesOf() {
		e, err := compileRules(st.Rules, s.s.Limiter(), i)
		if err != nil && len(cfg.Sites) > 0 {
			err = fmt.Errorf("sites[%d] %q: %w", i, strings.Join(st.Hosts, ","), err)
		}
		engines = append(engines, e)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return s.s.SetSitesRules(engines)
}

// Authenticator returns the server's Authenticator.
func (s *Server) Authenticator() *Authenticator { return s.a }

// Serve accepts connections on l, a plain TCP listener, until Shutdown.
func (s *Server) Serve(l net.Listener) error { return s.s.Serve(l) }

// Shutdown marks the server not ready (/readyz answers 503), keeps serving
// for DrainDelay, then stops accepting, closes connections still in their
// handshake, lets requests in flight finish until ctx ends, and closes every
// connection.
func (s *Server) Shutdown(ctx context.Context) error { return s.s.Shutdown(ctx) }

// Reload loads every file again; reason is logged as the trigger ("SIGHUP",
// say). See Authenticator.Reload.
func (s *Server) Reload(reason string) error { return s.s.Reload(reason) }

// HTTPHandler is for port 80: it answers ACME http-01 challenges when the
// server uses ACME, and redirects every other request to HTTPS.
func (s *Server) HTTPHandler() http.Handler { return s.s.HTTPHandler() }

// AdminHandler serves the operator's endpoints, for an address of their
// own: /metrics in the Prometheus format, /healthz (200 while the process
// runs), /readyz (503 once Shutdown has begun, so that a load balancer stops
// sending new connections), and with pprof, Go's /debug/pprof.
func (s *Server) AdminHandler(pprof bool) http.Handler { return s.s.AdminHandler(pprof) }

// Watch reloads the files that change, until ctx ends (Authenticator.Watch).
func (s *Server) Watch(ctx context.Context) error { return s.s.Watch(ctx) }

// Watching returns a channel closed once Watch watches the files (or has
// failed to): a change made after that is seen at once.
func (s *Server) Watching() <-chan struct{} { return s.s.Auth().Watching() }

// GatewayConfig configures a gateway: a reverse proxy to an origin that
// forwards each request's verified identity.
type GatewayConfig struct {
	// Upstream is the origin: http://HOST[:PORT], https://HOST[:PORT] or
	// unix:/PATH (HTTP over a Unix socket).
	Upstream string `yaml:"upstream"`
	// UpstreamCertFile and UpstreamKeyFile are a client certificate the
	// gateway presents to an https origin (mTLS), so that the origin
	// can trust the identity fields came from the gateway;
	// UpstreamCAFile verifies the origin (default: the system roots).
	UpstreamCertFile string `yaml:"upstream_cert"`
	UpstreamKeyFile  string `yaml:"upstream_key"`
	UpstreamCAFile   string `yaml:"upstream_cacert"`
	// XFCC adds Envoy's x-forwarded-client-cert field for origins that
	// already read it.
	XFCC bool `yaml:"xfcc"`
	// MaxRequestBody (0: 10 MiB) and MaxResponseBody (0: none) bound
	// bodies, a negative value meaning no limit; DialTimeout (default
	// 5 s) and ResponseHeaderTimeout (default 30 s) bound waiting for the
	// origin (504 after). A 101 (WebSocket) is never bounded.
	MaxRequestBody        int64         `yaml:"max_request_body"`
	MaxResponseBody       int64         `yaml:"max_response_body"`
	DialTimeout           time.Duration `yaml:"-"`
	ResponseHeaderTimeout time.Duration `yaml:"upstream_timeout"`
	// MaxUpstreamConns caps the connections open to the origin (0: 1024,
	// negative: no cap); requests beyond it wait for one.
	MaxUpstreamConns int `yaml:"upstream_max_conns"`
	// Logger receives origin failures (default slog.Default()).
	Logger *slog.Logger `yaml:"-"`
}

// NewGateway returns a handler that proxies every request to the origin,
// streaming both ways (WebSocket upgrades included), with the identity of
// the request's connection in these fields, after every copy the client
// sent, in any spelling (Client_Cert too), is removed:
//
//	Client-Cert              RFC 9440: the leaf, only when it validated
//	Client-Cert-Chain        RFC 9440: the verified path's intermediates, likewise
//	Req-Mtls-Flags           the TLS flags sent: 80, or 8, 80, 170
//	Req-Mtls-Cert-Requested  ?1 or ?0: a CertificateRequest was sent
//	Req-Mtls-Cert-Status     none, valid, or invalid;reason="..."
//	Req-Mtls-Cert-Sha256     :base64: of the SHA-256 of the leaf's DER
//	Req-Mtls-Cert-Store      client or bot
//	Req-Mtls-Resumed         ?1 or ?0
//	Forwarded, X-Forwarded-For, -Proto, -Host
//
// The origin answering late gets a 504, failing a 502, both logged. Use it
// as Config.Handler, or in any server whose ConnContext is
// ConnContext.
func NewGateway(cfg GatewayConfig) (http.Handler, error) {
	gc := gateway.Config{
		Upstream: cfg.Upstream, XFCC: cfg.XFCC,
		MaxRequestBody: cfg.MaxRequestBody, MaxResponseBody: cfg.MaxResponseBody, MaxUpstreamConns: cfg.MaxUpstreamConns,
		DialTimeout: cfg.DialTimeout, ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		Logger: cfg.Logger, ConnOf: srv.ConnOf,
	}
	if strings.HasPrefix(cfg.Upstream, "https:") || cfg.UpstreamCertFile != "" || cfg.UpstreamCAFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.UpstreamCAFile != "" {
			pool, err := certs.LoadPool(cfg.UpstreamCAFile)
			if err != nil {
				return nil, fmt.Errorf("upstream CA: %w", err)
			}
			tc.RootCAs = pool
		}
		if (cfg.UpstreamCertFile == "") != (cfg.UpstreamKeyFile == "") {
			return nil, errors.New("an upstream client certificate needs both a certificate and a key file")
		}
		if cfg.UpstreamCertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.UpstreamCertFile, cfg.UpstreamKeyFile)
			if err != nil {
				return nil, fmt.Errorf("upstream client certificate %q and key %q: %w", cfg.UpstreamCertFile, cfg.UpstreamKeyFile, err)
			}
			tc.Certificates = []tls.Certificate{cert}
			if cert.Leaf != nil && len(cert.Leaf.URIs) > 0 {
				gc.XFCCBy = cert.Leaf.URIs[0].String()
			}
		}
		gc.UpstreamTLS = tc
	}
	return gateway.New(gc)
}

// ACMEConfig configures certificates from an ACME server (RFC 8555), by
// golang.org/x/crypto/acme/autocert: obtained on the first connection for a
// listed name, cached, and renewed before expiry without a restart.
// Validation is by tls-alpn-01 (RFC 8737) on the server's own port (a
// validation connection offers acme-tls/1 alone and is never asked for a
// client certificate, whatever the policy), or by http-01 where
// Server.HTTPHandler is served on port 80.
type ACMEConfig struct {
	// Domains the certificate is for; other names are refused.
	Domains []string `yaml:"acme_domain"`
	// DirectoryURL is the ACME directory (default Let's Encrypt's).
	DirectoryURL string `yaml:"acme_directory"`
	// Email is the account's contact, optional.
	Email string `yaml:"acme_email"`
	// CacheDir keeps the account key and certificates (mode 0700, files
	// 0600), so that a restart serves the cached certificate.
	CacheDir string `yaml:"acme_cache"`
	// RootCAs verifies the ACME server (default: the system roots), for
	// a private one.
	RootCAs *x509.CertPool `yaml:"-"`
	// RenewBefore renews that long before expiry (default: a third of
	// the certificate's lifetime, at most 30 days).
	RenewBefore time.Duration `yaml:"-"`
}

// A SignatureVerifier checks Web Bot Auth signatures (HTTP Message
// Signatures, RFC 9421, as draft-meunier-webbotauth-httpsig-protocol-00
// profiles them) against the agents a site trusts: tag web-bot-auth,
// @authority covered (and Signature-Agent when sent, in either spelling),
// created and expires within a minute's skew and an hour's validity, keyid
// a key of the agent named (or of the agent that holds it), a nonce seen
// again within its validity refused. Only the agents listed are ever
// fetched. It is safe for concurrent use.
type SignatureVerifier struct{ v *webbotauth.Verifier }

// NewSignatureVerifier reads agentsFile, one agent a line: "URL" (its key
// directory fetched from URL/.well-known/http-message-signatures-directory
// over HTTPS, trusting caFile or the system roots; the response's own
// signatures checked and only the keys that signed it taken; again when
// its Cache-Control says, within a minute and an hour; redirects not
// followed; a 404 or 410 drops its keys; another failure keeps the last
// good keys, and logs it, for an hour past their cache lifetime; the first
// fetches are waited for, 6 s at most, so the first requests are judged
// with the keys in hand) or
// "URL JWKSFILE" (keys pinned). A Server made with SignatureAgentsFile
// makes its own.
func NewSignatureVerifier(agentsFile, caFile string, logger *slog.Logger) (*SignatureVerifier, error) {
	return newSignatureVerifier(agentsFile, caFile, webbotauth.Config{}, logger)
}

// newSignatureVerifier is NewSignatureVerifier with the settings of vc
// (from the Server's Config), its agents read from agentsFile.
func newSignatureVerifier(agentsFile, caFile string, vc webbotauth.Config, logger *slog.Logger) (*SignatureVerifier, error) {
	agents, err := webbotauth.ParseAgentsFile(agentsFile)
	if err != nil {
		return nil, err
	}
	vc.Agents = agents
	v := webbotauth.New(vc)
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := certs.LoadPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("signature agents CA: %w", err)
		}
		tc.RootCAs = pool
	}
	if logger == nil {
		logger = slog.Default()
	}
	v.Refresh(context.Background(), &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}, logger)
	// The first fetches, before the first request: each is bounded (5 s),
	// and one that fails leaves its agent's signatures invalid until a
	// later one succeeds.
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	v.FirstFetches(ctx)
	return &SignatureVerifier{v: v}, nil
}

// SignatureResult is the verdict on one request's signature.
type SignatureResult struct {
	// Status is "none", "valid" or "invalid"; Reason says why not valid.
	Status, Reason string
	// Agent is the agent's URL as listed, KeyID its key's JWK thumbprint,
	// when valid.
	Agent, KeyID string
}

// Verify decides on r.
func (s *SignatureVerifier) Verify(r *http.Request) SignatureResult {
	return SignatureResult(s.v.Verify(r))
}

// Middleware verifies each request and records the verdict for
// SignatureResultOf and for a gateway (NewGateway) behind it.
func (s *SignatureVerifier) Middleware(next http.Handler) http.Handler { return s.v.Middleware(next) }

// SignatureResultOf returns the verdict recorded on r by a Server or a
// Middleware, if any.
func SignatureResultOf(r *http.Request) (SignatureResult, bool) {
	res, ok := webbotauth.ResultOf(r)
	return SignatureResult(res), ok
}

// NewAccessLog returns a logger for Config.AccessLog that writes text lines
// to w, or JSON lines with json, exactly as slog.NewTextHandler and
// slog.NewJSONHandler would, but writes the server's request lines without
// slog's generic formatting (which costs a few percent of a proxied
// request). w is written one whole line at a time; buffer it for a file.
func NewAccessLog(w io.Writer, json bool) *slog.Logger {
	return slog.New(srv.NewAccessHandler(w, json))
}
