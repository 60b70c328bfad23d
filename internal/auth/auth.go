// Package auth decides client authentication for request mTLS
// (draft-jhoyla-req-mtls-flag-02: flag 80 of draft-ietf-tls-tlsflags) on a
// stock crypto/tls server: it asks for a client certificate only when the
// ClientHello sets the flag (or always, under PolicyAlways), checks it
// against the trust store meant for the client, records the decision on the
// connection, keeps session resumption from crossing those decisions, and
// reloads certificates and stores when their files change.
//
// An Authenticator serves any number of tls.Configs (TLSConfig), each built
// on a base config of the caller's. Connections must come through
// NewListener (or WrapConn), whose inspection reads the flags out of the
// ClientHello: crypto/tls itself exposes extension IDs, never their data.
package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/req-mtls/req-mtls/internal/clienthello"
)

// Config configures an Authenticator. Every field is optional.
type Config struct {
	Policy Policy

	// CertFile and KeyFile name the server's certificate chain and key,
	// reloaded when they change. Empty: the base config's Certificates or
	// GetCertificate serve.
	CertFile, KeyFile string
	// ClientCAFile holds the roots for client certificates; BotCAFile the
	// roots for flagged clients only (without it, flagged clients are
	// checked against ClientCAFile). PEM bundles of CA certificates.
	ClientCAFile, BotCAFile string
	// TicketKeysFile holds session ticket keys shared by a fleet (see
	// ParseTicketKeys): the first encrypts, all decrypt. Empty: each
	// TLSConfig has keys of its own (crypto/tls's, rotated daily).
	TicketKeysFile string

	// RecheckInterval is how often Watch compares the files with what was
	// loaded even when no file event came (default 1 minute).
	RecheckInterval time.Duration
	// OnReload, if set, is called for every part a reload tries, with its
	// error (nil when it loaded). OnDecision, if set, is called with every
	// handshake's decision, as it is made.
	OnDecision func(*Decision)
	OnReload   func(part string, err error)
	// Logger receives reloads and closed connections (default
	// slog.Default()).
	Logger *slog.Logger
	// Now is the clock for certificate validity (default time.Now).
	Now func() time.Time

	// HandshakeTimeout closes a connection from NewListener whose TLS
	// handshake has not passed the client-auth decision that long after
	// the accept (default 10 s; negative: never), so that clients that
	// send nothing, or half a ClientHello, do not stay.
	HandshakeTimeout time.Duration
	// ClientCRLFile holds certificate revocation lists (RFC 5280), PEM or
	// DER, each signed by a root of the client or bot store: a listed
	// certificate, or one whose issuer's CRL is past its nextUpdate, does
	// not validate. Reloaded as a part of its own.
	ClientCRLFile string

	// Agents, if set, vouch for client certificates by key: a
	// certificate whose subjectAltName URI names a trusted agent, and
	// whose key that agent's directory lists, validates whoever issued
	// it (StoreAgent). Agents alone may stand in for the CA bundles.
	Agents AgentVoucher
	// DenyFile holds a deny list (package deny): certificates, keys and
	// agents refused whatever vouches for them, with certificate_revoked
	// under a policy that enforces. Reloaded as a part of its own.
	DenyFile string

	// MaxHelloBytes bounds the bytes all connections together hold while
	// their ClientHellos are read and replayed (default 32 MiB; negative:
	// no bound); past it, a ClientHello is refused with internal_error.
	MaxHelloBytes int64
}

// An Authenticator is safe for concurrent use.
type Authenticator struct {
	cfg   Config
	log   *slog.Logger
	state atomic.Pointer[state]

	reloadMu sync.Mutex
	stamps   map[string][32]byte // by part name: the files as last loaded or tried
	gen      uint64

	connsMu sync.Mutex
	conns   map[*Conn]struct{} // open connections that hold a client certificate

	verified    verifyCache
	helloBudget *clienthello.Budget

	watching  chan struct{} // closed once Watch is armed
	reloaded  chan struct{} // Reload tells Watch that the state changed
	watchOnce sync.Once

	unwrappedOnce sync.Once // the warning of checkWrapped
}

// New loads every file in cfg; any failure is an error.
func New(cfg Config) (*Authenticator, error) {
	if cfg.RecheckInterval <= 0 {
		cfg.RecheckInterval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("a server certificate needs both a certificate and a key file")
	}
	if cfg.Policy != PolicyRequest && cfg.ClientCAFile == "" && cfg.BotCAFile == "" && cfg.Agents == nil {
		return nil, fmt.Errorf("client-auth policy %s needs a client CA or a bot CA bundle, or trusted agents", cfg.Policy)
	}
	if cfg.Policy == PolicyAlways && cfg.ClientCAFile == "" && cfg.Agents == nil {
		return nil, errors.New("client-auth policy always needs a client CA bundle (for clients that send no flag) or trusted agents")
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.MaxHelloBytes == 0 {
		cfg.MaxHelloBytes = 32 << 20
	}
	a := &Authenticator{cfg: cfg, log: cfg.Logger, stamps: map[string][32]byte{}, conns: map[*Conn]struct{}{}, watching: make(chan struct{}), reloaded: make(chan struct{}, 1)}
	a.verified.log = a.log.Error
	if cfg.MaxHelloBytes > 0 {
		a.helloBudget = clienthello.NewBudget(cfg.MaxHelloBytes)
	}
	st := &state{}
	for _, p := range a.parts() {
		a.stamps[p.name] = stamp(p.files)
		if err := p.load(st); err != nil {
			return nil, err
		}
	}
	a.publish(st)
	return a, nil
}

// Policy returns the policy in force.
func (a *Authenticator) Policy() Policy { return a.cfg.Policy }

// Now returns the time by the Authenticator's clock.
func (a *Authenticator) Now() time.Time { return a.cfg.Now() }

// Certificates returns the server certificate's leaf (nil without
// CertFile) and the roots of each trust store in force, by store name
// ("client", "bot").
func (a *Authenticator) Certificates() (*x509.Certificate, map[string][]*x509.Certificate) {
	st := a.state.Load()
	var leaf *x509.Certificate
	if st.cert != nil {
		leaf = st.cert.Leaf
	}
	roots := map[string][]*x509.Certificate{}
	for _, s := range []*store{st.client, st.bot} {
		if s != nil {
			roots[s.kind.String()] = s.certs
		}
	}
	return leaf, roots
}

func (a *Authenticator) publish(st *state) {
	a.gen++
	st.gen = a.gen
	a.state.Store(st)
}

// NewListener wraps the connections l accepts for inspection. Put
// crypto/tls on top of it (tls.NewListener, or a server's own handshakes).
func (a *Authenticator) NewListener(l net.Listener) net.Listener {
	return &listener{Listener: l, a: a}
}

type listener struct {
	net.Listener
	a *Authenticator
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ac := l.a.WrapConn(c)
	if d := l.a.cfg.HandshakeTimeout; d > 0 {
		// Made stopped, set, then started: the callback's close reads
		// hsTimer.
		ac.hsTimer = time.AfterFunc(time.Hour, func() {
			if !ac.handshakeOK.Load() {
				ac.CloseNow()
			}
		})
		ac.hsTimer.Stop()
		ac.hsTimer.Reset(d)
	}
	return ac, nil
}

// CRLs describes the certificate revocation lists in force.
func (a *Authenticator) CRLs() []CRLInfo { return a.state.Load().crls.info() }

// HelloBytes returns the bytes connections hold now for their ClientHellos,
// counted against Config.MaxHelloBytes.
func (a *Authenticator) HelloBytes() int64 {
	if a.helloBudget == nil {
		return 0
	}
	return a.helloBudget.Used()
}

// ValidatesNow reports whether a decision's certificate would validate
// against the trust stores in force now.
func (a *Authenticator) ValidatesNow(d *Decision) bool {
	if len(d.Chain) == 0 {
		return false
	}
	return a.check(d.Chain, a.state.Load(), d.Flagged, a.cfg.Now()).err == nil
}

// TLSConfig returns a server config built on base (nil for none), whose
// GetConfigForClient decides client authentication per connection. Of
// base, these are taken over: GetConfigForClient (base's own is called
// first and its result built on instead), ClientAuth, ClientCAs,
// VerifyConnection (base's runs after the decision is made, when the
// handshake goes on), WrapSession and UnwrapSession (tickets are encrypted
// with base's keys through EncryptTicket and DecryptTicket, and carry a tag
// that says what the session proved). With CertFile set, Certificates
// too, and GetCertificate is cleared. Defaults when base leaves them unset:
// NextProtos h2 and http/1.1, TLS 1.2 at least, TLS 1.2 cipher suites with
// ECDHE and AEAD only, Time from Config.Now; without a certificate in base
// or CertFile, handshakes fail with errNoCertificate, which says where it
// must come from. Everything else of base (ALPN, curves, key log, ...) is
// kept. Neither base nor the returned config may be modified after.
func (a *Authenticator) TLSConfig(base *tls.Config) *tls.Config {
	if base == nil {
		base = &tls.Config{}
	}
	b := &binding{a: a, base: base.Clone(), keys: base.Clone()}
	b.base.GetConfigForClient = nil
	custom := base.GetConfigForClient
	// ACME's tls-alpn-01 is served only where base offers acme-tls/1
	// (as autocert's configs and Server's do): elsewhere a client
	// offering it alone is a client like any other, under the policy.
	acme := slices.Contains(base.NextProtos, acmeTLS1)
	// Client authentication is the policy's: a base that asks for
	// certificates itself is refused, never quietly weakened.
	refused := baseClientAuthError(base)
	if refused != nil {
		a.log.Error("TLS config refused: every handshake will fail", "err", refused)
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		if refused != nil {
			return nil, refused
		}
		a.checkWrapped(chi.Conn)
		if acme && len(chi.SupportedProtos) == 1 && chi.SupportedProtos[0] == acmeTLS1 {
			// An ACME tls-alpn-01 validation (RFC 8737, Section 3:
			// the validator offers acme-tls/1 alone) is never asked
			// for a certificate, whatever the policy: it has none,
			// and it only checks the one base serves for it.
			v := b.base.Clone()
			v.NextProtos = []string{acmeTLS1}
			v.ClientAuth = tls.NoClientCert
			return v, nil
		}
		if custom != nil {
			c, err := custom(chi)
			if err != nil {
				return nil, err
			}
			if c != nil {
				// Built for this connection alone.
				return b.overlay(c.Clone(), a.state.Load(), isFlagged(chi.Conn)).perConn(b, chi.Conn), nil
			}
		}
		return b.forConn(chi.Conn), nil
	}
	if cfg.NextProtos == nil {
		cfg.NextProtos = defaultProtos
	}
	return cfg
}

var defaultProtos = []string{"h2", "http/1.1"}

// baseClientAuthError says why a base config cannot be built on: it asks
// for client certificates (ClientAuth) or names their roots (ClientCAs),
// which the policy and the stores decide here.
func baseClientAuthError(base *tls.Config) error {
	if base.ClientAuth == tls.NoClientCert && base.ClientCAs == nil {
		return nil
	}
	return fmt.Errorf("reqmtls: the base config sets ClientAuth (%v) or ClientCAs, which TLSConfig would override: leave them unset and say it with the policy and the CA files instead (ClientAuth RequireAndVerifyClientCert is PolicyAlways with ClientCAFile)", base.ClientAuth)
}

// acmeTLS1 is the ALPN protocol of ACME's tls-alpn-01 challenge (RFC 8737).
const acmeTLS1 = "acme-tls/1"

var errNoCertificate = errors.New("reqmtls: no server certificate: put it in the base config given to TLSConfig (Certificates or GetCertificate) or set CertFile; http.Server.ServeTLS's certFile and keyFile do not reach the configs TLSConfig builds")

// tls12Suites are the TLS 1.2 suites used when base names none: ECDHE with
// AEAD only. TLS 1.3 suites are not configurable in crypto/tls and are all
// AEAD.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// A binding is one TLSConfig: a base config, the ticket keys, and the two
// config templates built from them for the state in force (for unflagged
// and flagged clients), made again when a reload publishes a new state.
type binding struct {
	a    *Authenticator
	base *tls.Config
	keys *tls.Config // owns the session ticket keys, across reloads
	tmpl atomic.Pointer[templates]
}

type templates struct {
	st      *state
	configs [2]*cfgTemplate // indexed by whether the client set flag 80
}

func isFlagged(c net.Conn) bool {
	ac, ok := c.(*Conn)
	return ok && ac.Flagged()
}

// checkWrapped warns once when a connection reaches a TLSConfig without
// having come through NewListener or WrapConn: no flag can be read then, so
// no client is ever seen as flagged.
func (a *Authenticator) checkWrapped(c net.Conn) {
	if _, ok := c.(*Conn); !ok {
		a.unwrappedOnce.Do(func() {
			a.log.Warn("a connection reached the TLS config without the Authenticator's listener: its ClientHello flags cannot be read, so no client is seen as flagged; wrap the listener with Listener (or the connection with WrapConn)",
				"conn_type", fmt.Sprintf("%T", c))
		})
	}
}

// forConn returns the config for one connection: a clone of the template
// for the state in force, whose VerifyConnection records the decision on c.
func (b *binding) forConn(c net.Conn) *tls.Config {
	st := b.a.state.Load()
	t := b.tmpl.Load()
	if t == nil || t.st != st {
		t = &templates{st: st}
		for _, flagged := range []bool{false, true} {
			t.configs[b2i(flagged)] = b.overlay(b.base.Clone(), st, flagged)
		}
		b.tmpl.Store(t)
	}
	return t.configs[b2i(isFlagged(c))].perConn(b, c)
}

// cfgTemplate is a config built for one state and flaggedness; perConn
// clones it for a connection.
type cfgTemplate struct {
	*tls.Config
	st      *state
	flagged bool
	verify  func(tls.ConnectionState) error // base's VerifyConnection
}

func (t *cfgTemplate) perConn(b *binding, c net.Conn) *tls.Config {
	cfg := t.Config.Clone()
	ac, _ := c.(*Conn)
	if ac != nil && (t.st.crls != nil || t.st.deny != nil) && b.a.cfg.Policy.enforces() && cfg.ClientAuth != tls.NoClientCert {
		// A revoked or denied certificate is refused with certificate_revoked
		// (alert.go): the connection learns the traffic key for that.
		ac.alerts = &alertRewriter{next: cfg.KeyLogWriter}
		cfg.KeyLogWriter = ac.alerts
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := b.a.decide(ac, t.st, t.flagged, cs); err != nil {
			return err
		}
		if t.verify != nil {
			if err := t.verify(cs); err != nil {
				return err
			}
		}
		if ac != nil {
			ac.handshakeOK.Store(true)
			if ac.hsTimer != nil {
				ac.hsTimer.Stop()
			}
		}
		return nil
	}
	return cfg
}

// overlay sets on cfg what request mTLS decides, for state st and a client
// that set flag 80 or not.
func (b *binding) overlay(cfg *tls.Config, st *state, flagged bool) *cfgTemplate {
	a := b.a
	policy := a.cfg.Policy
	if cfg.MaxVersion != 0 && cfg.MaxVersion < tls.VersionTLS13 {
		// Capped below TLS 1.3, where the flag means nothing and a
		// client certificate travels in the clear: no client is
		// treated as flagged.
		flagged = false
	}
	t := &cfgTemplate{Config: cfg, st: st, flagged: flagged, verify: cfg.VerifyConnection}
	cfg.GetConfigForClient = nil
	cfg.VerifyConnection = nil
	if cfg.NextProtos == nil {
		// Configs from GetConfigForClient do not inherit the outer
		// config's NextProtos.
		cfg.NextProtos = defaultProtos
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if cfg.CipherSuites == nil {
		cfg.CipherSuites = tls12Suites
	}
	if cfg.Time == nil {
		cfg.Time = a.cfg.Now
	}
	switch {
	case st.cert != nil:
		cfg.Certificates = []tls.Certificate{*st.cert}
		cfg.GetCertificate = nil
	case len(cfg.Certificates) == 0 && cfg.GetCertificate == nil:
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return nil, errNoCertificate
		}
	}
	cfg.ClientAuth = tls.NoClientCert
	cfg.ClientCAs = nil
	var want storeRef // the store a session's certificate must have been checked against
	if policy.asks(flagged) {
		// Verification is ValidateClientCert's alone (in decide), so
		// crypto/tls is only told whether a certificate must come.
		// ClientCAs fills the certificate_authorities extension of
		// CertificateRequest.
		cfg.ClientAuth = tls.RequestClientCert
		if policy.requires(flagged) {
			cfg.ClientAuth = tls.RequireAnyClientCert
		}
		cfg.ClientCAs = st.storeFor(flagged).roots()
		want = st.storeFor(flagged).ref()
	}
	// Session tickets carry a sessionTag; acceptTicket says which ones
	// may resume here, and why.
	keys := b.keys
	if st.ticketKeys != nil {
		keys = st.ticketKeys
	}
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = append(ss.Extra, sessionTag{hasCert: len(cs.PeerCertificates) > 0, store: want}.marshal())
		return keys.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := keys.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			return nil, err
		}
		tag, ok := parseSessionTag(ss.Extra)
		if !acceptTicket(tag, ok, flagged, want) {
			return nil, nil
		}
		return ss, nil
	}
	return t
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// decide makes the client-auth decision of a handshake (full or resumed:
// crypto/tls calls VerifyConnection for both), records it on c, and
// returns an error that fails the handshake when the policy enforces.
func (a *Authenticator) decide(c *Conn, st *state, flagged bool, cs tls.ConnectionState) error {
	policy := a.cfg.Policy
	d := &Decision{
		Policy:  policy,
		Flagged: flagged,
		// With a PSK no CertificateRequest is sent (RFC 8446, Section
		// 4.3.2); a resumed session brings the certificate of the one
		// it resumes.
		Requested: policy.asks(flagged) && !cs.DidResume,
		Resumed:   cs.DidResume,
		Chain:     cs.PeerCertificates,
	}
	if len(d.Chain) > 0 {
		v := a.check(d.Chain, st, flagged, a.cfg.Now())
		d.Verified, d.Store, d.Agent, d.Err = v.verified, v.store, v.agent, v.err
	}
	if a.cfg.OnDecision != nil {
		a.cfg.OnDecision(d)
	}
	if c != nil {
		c.decision.Store(d)
		if len(d.Chain) > 0 {
			c.track(a)
		}
	}
	if d.Err != nil && policy.enforces() {
		if c != nil && c.alerts != nil && (errors.Is(d.Err, ErrRevoked) || errors.Is(d.Err, ErrDenied)) {
			c.alerts.mu.Lock()
			c.alerts.want = alertCertificateRevoked
			c.alerts.mu.Unlock()
		}
		return fmt.Errorf("client certificate rejected: %w", d.Err)
	}
	return nil
}

// Reload loads every part again, whether its files changed or not. A part
// that fails keeps its last good state; the others take their new one.
// Failures are logged and returned.
func (a *Authenticator) Reload(trigger string) error {
	err := a.reload(trigger, true)
	select {
	case a.reloaded <- struct{}{}: // Watch re-arms its CRL timer
	default:
	}
	return err
}

// reload loads the parts whose files changed since they were last loaded
// or tried (all of them with force), publishes a new state if any part
// took, and closes connections that the new trust stores no longer accept.
func (a *Authenticator) reload(trigger string, force bool) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	old := a.state.Load()
	next := &state{cert: old.cert, client: old.client, bot: old.bot, ticketKeys: old.ticketKeys, crls: old.crls, deny: old.deny}
	var errs []error
	var took []string
	storesTook := false
	for _, p := range a.parts() {
		sum := stamp(p.files)
		if !force && sum == a.stamps[p.name] && !(p.afterStores && storesTook) {
			continue
		}
		a.stamps[p.name] = sum
		err := p.load(next)
		if a.cfg.OnReload != nil {
			a.cfg.OnReload(p.name, err)
		}
		if err != nil {
			a.log.Error("reload failed; keeping the last good certificates", "trigger", trigger, "part", p.name, "err", err)
			errs = append(errs, err)
			continue
		}
		took = append(took, p.name)
		storesTook = storesTook || p.store
	}
	if len(took) == 0 {
		return errors.Join(errs...)
	}
	a.publish(next)
	attrs := []any{"trigger", trigger, "generation", next.gen, "parts", took}
	if next.cert != nil {
		attrs = append(attrs, "cert_expires", next.cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	a.log.Info("reloaded certificates", attrs...)
	if next.client != old.client || next.bot != old.bot || next.crls != old.crls || next.deny != old.deny {
		a.recheck(next)
	}
	return errors.Join(errs...)
}

// recheck applies new trust stores to open connections: under a policy that
// enforces, a connection whose certificate no longer validates is closed,
// so that no request is served on a certificate the server would refuse
// now. Under request, connections stay with their handshake's decision.
func (a *Authenticator) recheck(st *state) {
	if !a.cfg.Policy.enforces() {
		return
	}
	a.connsMu.Lock()
	conns := make([]*Conn, 0, len(a.conns))
	for c := range a.conns {
		conns = append(conns, c)
	}
	a.connsMu.Unlock()
	now := a.cfg.Now()
	for _, c := range conns {
		d := c.Decision()
		if d == nil || len(d.Chain) == 0 {
			continue
		}
		if err := a.check(d.Chain, st, d.Flagged, now).err; err != nil {
			a.log.Warn("closing connection: its client certificate no longer validates",
				"remote", c.RemoteAddr().String(), "cert", CertName(d.Chain[0]), "err", err)
			c.Close()
		}
	}
}
