package reqmtls

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// ClientConfig configures a Dialer or a Transport. The zero value sends no
// flags and no certificate, and verifies servers against the system roots.
type ClientConfig struct {
	// Flags to send in the ClientHello (RequestMTLSFlags for request
	// mTLS); empty sends no tls_flags extension. Send flag 80 only with a
	// certificate at hand.
	Flags Flags
	// Codepoint of the tls_flags extension: CodepointExperimental (the
	// default, what deployed servers read) or CodepointBoringSSL.
	Codepoint uint16
	// CertFile and KeyFile hold the client certificate (PEM), sent when
	// a server asks. They are read at once, and again whenever they
	// change before a handshake; a change that fails to load keeps the
	// last good pair.
	CertFile, KeyFile string
	// GetClientCertificate, instead of CertFile and KeyFile, gives the
	// certificate when a server asks, with the meaning of tls.Config's:
	// its PrivateKey may be any crypto.Signer, so keys held by a KMS or
	// an HSM serve. A nil or empty certificate sends none. Sessions are
	// resumed only with the certificate it returned last: one that
	// returns another ends resumption of the older one's sessions.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// SignatureKey, if set, signs every request with Web Bot Auth, HTTP
	// Message Signatures (RFC 9421) as draft-meunier-webbotauth-httpsig-
	// protocol-00 profiles them: @authority covered (and Signature-Agent
	// when SignatureAgent is set), created, expires (SignatureValidity
	// later, default 1 minute), a random nonce, keyid the key's JWK
	// thumbprint, tag web-bot-auth. An Ed25519 crypto.Signer: keys in a
	// KMS work. SignatureAgent is where its directory lives
	// ("https://bot.example"), sent as the sf-string deployed verifiers
	// read, or as the working group's dictionary with
	// SignatureAgentDictionary. Either without SignatureKey is an error,
	// as is a SignatureAgent that is not an https URL.
	SignatureKey             crypto.Signer
	SignatureAgent           string
	SignatureAgentDictionary bool
	SignatureValidity        time.Duration
	// Proxy chooses a proxy for each request, with the meaning of
	// http.Transport.Proxy; nil means http.ProxyFromEnvironment
	// (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as for users of
	// http.DefaultTransport. The schemes are net/http's: http, https (TLS
	// to the proxy, verified with RootCAs, Time and InsecureSkipVerify as
	// servers are), socks5 and socks5h (RFC 1928; both ask the proxy for
	// the host by name). HTTPS goes through a CONNECT tunnel (a SOCKS5
	// connection), with Proxy-Authorization (RFC 1929's username and
	// password) from the proxy URL's user info, and the handshake runs
	// inside it, flags and certificate unchanged; a refusal is an *Error
	// naming the proxy and its status. For direct connections whatever
	// the environment says, set Proxy to NoProxy.
	Proxy func(*http.Request) (*url.URL, error)
	// RootCAs verifies servers; nil means the system roots.
	RootCAs *x509.CertPool
	// Time is the clock servers' certificates are checked against
	// (default time.Now), as tls.Config's Time.
	Time func() time.Time
	// ServerName, when set, is sent as SNI and verified in the server's
	// certificate instead of the URL's host; the Host header stays the
	// URL's.
	ServerName string
	// InsecureSkipVerify accepts any server certificate, so that anyone
	// on the path can pose as the server. For tests only.
	InsecureSkipVerify bool
	// Resolve maps "host:port" (as net.JoinHostPort writes it) to the
	// "addr:port" to connect to instead, as curl's --resolve does; SNI,
	// verification and the Host header keep the URL's host. Hosts match
	// without regard to case. Through a proxy it is not used: the proxy
	// is asked for the host by name (as curl does), and resolves it.
	Resolve map[string]string
	// Timeout bounds connecting (to the site or the proxy, for http URLs
	// as for https ones) and the TLS handshake, and, on a ClientConn, each
	// request (default 30 s); a connection it cuts short is an *Error
	// saying "timed out after" it. An http.Client's own Timeout bounds
	// whole requests made through a Transport.
	Timeout time.Duration
	// DisableResumption turns the per-host TLS session cache off.
	DisableResumption bool
	// KeyLog receives TLS secrets in NSS key log format, for debugging.
	KeyLog io.Writer
	// Warn receives warnings meant for a person (a failed certificate
	// reload, say). May be nil.
	Warn func(format string, a ...any)
	// OnHandshake, if set, is called after every handshake a Transport
	// makes, with the server's address.
	OnHandshake func(addr string, h Handshake)
	// MaxConnsPerHost, MaxIdleConns and MaxIdleConnsPerHost have the
	// meaning of http.Transport's, for a Transport: connections to one
	// host at most (dialing, in use and idle; 0: no limit), idle
	// HTTP/1.1 connections in all (0: no limit) and per host (0: 8). An
	// HTTP/2 connection carries many requests at once, so a host that
	// speaks it has one connection, more only when its streams run out.
	// Under MaxConnsPerHost, the requests after the first on a new HTTP/2
	// connection wait for the server's SETTINGS (its stream limit), and a
	// request that finds every stream of the host's connections taken
	// waits, without polling, for one to be free, for as long as its
	// context allows (its failure then is the request's, not a dial's). As
	// with http.Transport, an HTTP/2 connection that takes no new request
	// (the server sent GOAWAY) no longer counts while its last requests
	// finish.
	MaxConnsPerHost, MaxIdleConns, MaxIdleConnsPerHost int
	// IdleTimeout closes a kept-alive connection idle that long (default
	// 90 s for a Transport; for a Dialer's HTTP/2 connections 1 s, after
	// which a ClientConn must be dialed again).
	IdleTimeout time.Duration

	// dialControl, set by NewForwardProxy, refuses destinations before
	// connecting (client.Config.DialControl).
	dialControl func(ctx context.Context, network, address string, c syscall.RawConn) error
}

func (c ClientConfig) internal() client.Config {
	cfg := client.Config{
		Codepoint: c.Codepoint,
		CertFile:  c.CertFile, KeyFile: c.KeyFile,
		GetClientCertificate: c.GetClientCertificate,
		Proxy:                c.Proxy,
		RootCAs:              c.RootCAs,
		Time:                 c.Time,
		ServerName:           c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify, Resolve: c.Resolve,
		Timeout: c.Timeout,
		Resume:  !c.DisableResumption,
		KeyLog:  c.KeyLog,
		Warn:    c.Warn,

		IdleTimeout: c.IdleTimeout,
		DialControl: c.dialControl,
	}
	cfg.Flags = c.Flags.s
	if c.SignatureKey != nil {
		cfg.Signing = &client.Signing{Key: c.SignatureKey, Agent: c.SignatureAgent, AgentDictionary: c.SignatureAgentDictionary,
			Validity: c.SignatureValidity, Now: c.Time}
	}
	if cfg.Proxy == nil {
		cfg.Proxy = http.ProxyFromEnvironment
	}
	return cfg
}

// LoadSignatureKey reads an Ed25519 private key for
// ClientConfig.SignatureKey from file: PEM (PKCS #8, as `openssl genpkey
// -algorithm ed25519` writes it) or a JWK (kty OKP, crv Ed25519, d).
func LoadSignatureKey(file string) (crypto.Signer, error) { return httpsig.LoadSigningKey(file) }

// NoProxy is a ClientConfig.Proxy that connects directly, whatever the
// environment says.
func NoProxy(*http.Request) (*url.URL, error) { return nil, nil }

// check says which field of c is wrong and why, or returns nil; the
// errors of internal/client that reach a user name their field too.
func (c ClientConfig) check() error {
	if c.Codepoint != 0 && c.Codepoint != CodepointExperimental && c.Codepoint != CodepointBoringSSL {
		return fmt.Errorf("ClientConfig.Codepoint 0x%04x: want 0x%04x (CodepointExperimental) or %d (CodepointBoringSSL)", c.Codepoint, CodepointExperimental, CodepointBoringSSL)
	}
	for k := range c.Resolve {
		if _, _, err := net.SplitHostPort(k); err != nil {
			return fmt.Errorf("ClientConfig.Resolve %q: want host:port (%v)", k, err)
		}
	}
	if c.SignatureKey == nil {
		// A crawler that meant to sign and would silently not.
		switch {
		case c.SignatureAgent != "":
			return fmt.Errorf("SignatureAgent %q: no SignatureKey to sign with", c.SignatureAgent)
		case c.SignatureAgentDictionary:
			return errors.New("SignatureAgentDictionary: no SignatureKey to sign with")
		}
		return nil
	}
	if _, ok := c.SignatureKey.Public().(ed25519.PublicKey); !ok {
		return fmt.Errorf("SignatureKey: a %T, want an Ed25519 key", c.SignatureKey)
	}
	if c.SignatureAgent != "" {
		if u, err := url.Parse(c.SignatureAgent); err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("SignatureAgent %q: want the https:// URL where the key's directory lives", c.SignatureAgent)
		}
	}
	return nil
}

// Handshake is what one TLS handshake did.
type Handshake struct {
	Version     string `json:"tls_version"`  // "TLS 1.3"
	CipherSuite string `json:"cipher_suite"` // "TLS_AES_128_GCM_SHA256"
	ALPN        string `json:"alpn"`         // "h2" or "http/1.1"
	ServerName  string `json:"server_name"`
	// Proxy is the proxy tunnelled through (its password hidden), "" for
	// a direct connection.
	Proxy     string `json:"proxy,omitempty"`
	FlagsSent Flags  `json:"tls_flags_sent"`
	Codepoint uint16 `json:"tls_flags_codepoint,omitempty"` // 0 when no flags were sent
	// CertRequested reports whether the server sent a CertificateRequest,
	// RequestedCAs the CA names it listed (escaped for printing).
	CertRequested bool     `json:"cert_requested"`
	RequestedCAs  []string `json:"cert_request_cas,omitempty"`
	// CertSent reports whether a certificate was sent; IssuerListed, when
	// the server listed CA names, whether they named its issuer (it is
	// sent either way).
	CertSent     bool          `json:"cert_sent"`
	IssuerListed *bool         `json:"cert_issuer_listed,omitempty"`
	Resumed      bool          `json:"resumed"`
	Duration     time.Duration `json:"handshake_ns"`
	// Addr is the address connected to (after ClientConfig.Resolve), or
	// the one asked of the proxy.
	Addr string `json:"addr"`
	// ServerCert describes the server's certificate; PeerCertificates is
	// the chain it sent (on a resumed session, those of the original
	// handshake). Verified is false with InsecureSkipVerify.
	ServerCert       *CertInfo           `json:"server_certificate,omitempty"`
	PeerCertificates []*x509.Certificate `json:"-"`
	Verified         bool                `json:"server_verified"`
}

// CertInfo describes a certificate for a person. Names taken from it are
// escaped for printing.
type CertInfo struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	SANs     []string  `json:"sans,omitempty"` // "DNS:name", "IP:addr", "URI:uri", "email:addr"
	NotAfter time.Time `json:"not_after"`
	SHA256   string    `json:"sha256"` // hex, of the certificate's DER
}

func handshakeOf(h *client.Handshake) Handshake {
	out := Handshake{
		Version: h.Version, CipherSuite: h.CipherSuite, ALPN: h.ALPN, ServerName: h.ServerName,
		FlagsSent: Flags{h.FlagsSent}, CertRequested: h.CertRequested, RequestedCAs: h.RequestedCAs,
		CertSent: h.CertSent, IssuerListed: h.CASMatch, Resumed: h.Resumed, Duration: h.Duration,
		Addr: h.Addr, Proxy: h.Proxy, PeerCertificates: h.PeerCertificates, Verified: h.Verified,
	}
	if c := h.ServerCert; c != nil {
		out.ServerCert = &CertInfo{Subject: c.Subject, Issuer: c.Issuer, SANs: c.SANs, NotAfter: c.NotAfter, SHA256: c.SHA256}
	}
	if !h.FlagsSent.IsEmpty() {
		out.Codepoint = CodepointExperimental
		if h.Codepoint == fmt.Sprintf("0x%04x", CodepointBoringSSL) {
			out.Codepoint = CodepointBoringSSL
		}
	}
	return out
}

// An Error explains a failed connection or request for a person: what
// failed, the TLS alert the server sent when one did, and what to try.
type Error struct {
	Msg   string
	Alert string // "certificate_required", "bad_certificate", ...; "" when none
	Hint  string
	Err   error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

func publicError(err error) error {
	var e *client.Error
	if errors.As(err, &e) {
		return &Error{Msg: e.Msg, Alert: e.Alert, Hint: e.Hint, Err: e.Err}
	}
	return err
}

// LoadCertPool reads a PEM bundle of certificates to trust as roots, for
// ClientConfig.RootCAs.
func LoadCertPool(file string) (*x509.CertPool, error) { return certs.LoadPool(file) }

// A Dialer opens connections one at a time, with their handshakes to look
// at. It is safe for concurrent use; connections share its session cache.
type Dialer struct {
	c *client.Client
}

// NewDialer loads the client certificate, if any.
func NewDialer(cfg ClientConfig) (*Dialer, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	c, err := client.New(cfg.internal())
	if err != nil {
		return nil, err
	}
	return &Dialer{c: c}, nil
}

// HasCertificate reports whether a client certificate is configured.
func (d *Dialer) HasCertificate() bool { return d.c.HasCertificate() }

// Dial connects to the host of an https URL and completes the handshake.
func (d *Dialer) Dial(ctx context.Context, u *url.URL) (*ClientConn, error) {
	cn, err := d.c.Dial(ctx, u)
	if err != nil {
		return nil, publicError(err)
	}
	return &ClientConn{c: d.c, cn: cn}, nil
}

// A ClientConn is one connection, over HTTP/2 or HTTP/1.1.
type ClientConn struct {
	c  *client.Client
	cn *client.Conn
}

// Handshake returns what the connection's handshake did.
func (cc *ClientConn) Handshake() Handshake { return handshakeOf(&cc.cn.Handshake) }

// RoundTrip sends req and returns the response, its body unread. Over
// HTTP/1.1 read and close the body before the next request; over HTTP/2
// requests may run at once. A failure is an *Error, naming the TLS alert
// when the server sent one (in TLS 1.3 a refused certificate shows on the
// first request).
func (cc *ClientConn) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := cc.c.RoundTrip(cc.cn, req)
	return resp, publicError(err)
}

// Close closes the connection.
func (cc *ClientConn) Close() error { return cc.cn.Close() }

// A Transport is an http.RoundTripper that speaks request mTLS: the flags
// in every ClientHello, the certificate when a server asks, sessions
// resumed per host, HTTP/2 where the server offers it and HTTP/1.1
// otherwise (both kept alive, and shared between requests; concurrent
// requests to a new host share one dial). Plain http URLs go through
// net/http's own transport. Over HTTP/1.1, responses have no TLS state
// (resp.TLS is nil). It is safe for concurrent use.
type Transport struct {
	t *client.Transport
}

// NewTransport loads the client certificate, if any.
func NewTransport(cfg ClientConfig) (*Transport, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	tc := client.TransportConfig{Config: cfg.internal(),
		MaxConnsPerHost: cfg.MaxConnsPerHost, MaxIdleConns: cfg.MaxIdleConns, MaxIdleConnsPerHost: cfg.MaxIdleConnsPerHost}
	if on := cfg.OnHandshake; on != nil {
		tc.OnHandshake = func(addr string, h *client.Handshake) { on(addr, handshakeOf(h)) }
	}
	t, err := client.NewTransport(tc)
	if err != nil {
		return nil, err
	}
	return &Transport{t: t}, nil
}

// RoundTrip sends req. Over https it uses a kept-alive HTTP/2 connection to
// the host when one can take the request, else dials one; a host whose
// server chose HTTP/1.1 is served through a pool of HTTP/1.1 connections.
// A request the server did not process (a refused stream, a stream above
// the last of its GOAWAY, a connection closing before the request went) is
// sent again, with its body from GetBody, up to five times. One that fails
// because its pooled connection went away is sent once more on a new one,
// when it is idempotent (GET, HEAD, OPTIONS, TRACE) and has no body; a
// refusal by the server (a TLS alert) never is. A failure to connect or a
// refusal is an *Error.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.t.RoundTrip(req)
	if err != nil {
		return nil, publicError(err)
	}
	return resp, nil
}

// CloseIdleConnections closes connections that carry no request.
func (t *Transport) CloseIdleConnections() { t.t.CloseIdleConnections() }
