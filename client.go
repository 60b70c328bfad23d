//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 client that takes an established uTLS connection; net/http's replacement (Transport.NewClientConn) dials for itself.

package reqmtls

import (
	"cmp"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/idna"

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
	// SignatureAgentDictionary.
	SignatureKey             crypto.Signer
	SignatureAgent           string
	SignatureAgentDictionary bool
	SignatureValidity        time.Duration
	// Proxy chooses an HTTP proxy for each request, with the meaning of
	// http.Transport.Proxy; nil means http.ProxyFromEnvironment
	// (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as for users of
	// http.DefaultTransport. HTTPS goes through an HTTP CONNECT tunnel,
	// with Proxy-Authorization from the proxy URL's user info, and the
	// handshake runs inside it, flags and certificate unchanged; a
	// refusal is an *Error naming the proxy and its status. For direct
	// connections whatever the environment says, set Proxy to NoProxy.
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
	// without regard to case.
	Resolve map[string]string
	// Timeout bounds connecting and the TLS handshake, and, on a
	// ClientConn, each request (default 30 s). An http.Client's own
	// Timeout bounds whole requests made through a Transport.
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
	// connection wait for the server's SETTINGS (its stream limit). As
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

func (c ClientConfig) check() error {
	if c.Codepoint != 0 && c.Codepoint != CodepointExperimental && c.Codepoint != CodepointBoringSSL {
		return fmt.Errorf("tls_flags codepoint 0x%04x: want 0x%04x or %d", c.Codepoint, CodepointExperimental, CodepointBoringSSL)
	}
	return nil
}

// Handshake is what one TLS handshake did.
type Handshake struct {
	Version     string `json:"tls_version"`  // "TLS 1.3"
	CipherSuite string `json:"cipher_suite"` // "TLS_AES_128_GCM_SHA256"
	ALPN        string `json:"alpn"`         // "h2" or "http/1.1"
	ServerName  string `json:"server_name"`
	// Proxy is the HTTP proxy tunnelled through (its password hidden), ""
	// for a direct connection.
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
	// Addr is the address connected to (after ClientConfig.Resolve).
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
	d      *Dialer
	onHS   func(string, Handshake)
	h2     *http2.Transport
	h1base http.Transport  // the settings of the HTTP/1.1 pools
	up     *client.Client  // the dialer for protocol upgrades: ALPN http/1.1 alone
	plain  *http.Transport // http URLs

	maxConns int // ClientConfig.MaxConnsPerHost, for HTTP/2

	mu      sync.Mutex
	h2pool  map[string][]*h2Conn
	dialing map[string]*dialCall // dials in progress, by address
	h1only  map[string]bool      // hosts that chose HTTP/1.1
	handed  map[string]net.Conn  // a dialed HTTP/1.1 connection for h1's next dial
	// h1s are the HTTP/1.1 pools, by proxy ("" for none) and by whether
	// they are for upgrades: net/http pools by address alone, and a
	// connection through one proxy must never serve a request meant for
	// another, or for none.
	h1s map[string]*http.Transport
}

// An h2Conn is a pooled HTTP/2 connection and the TLS connection under it,
// which knows the alert that ended it, if one did.
type h2Conn struct {
	*http2.ClientConn
	tc     *client.AlertConn
	opened atomic.Bool // a request has taken its first stream (awaitSettings)
}

// dialCall is one dial to an address that concurrent requests wait for.
type dialCall struct {
	done chan struct{}
	cc   *h2Conn // nil when the server chose HTTP/1.1 or the dial failed
	err  error
}

// maxH1Hosts bounds the memory of which hosts chose HTTP/1.1.
const maxH1Hosts = 10000

// NewTransport loads the client certificate, if any.
func NewTransport(cfg ClientConfig) (*Transport, error) {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	d, err := NewDialer(cfg)
	if err != nil {
		return nil, err
	}
	t := &Transport{d: d, onHS: cfg.OnHandshake,
		h2pool:  map[string][]*h2Conn{},
		dialing: map[string]*dialCall{}, h1only: map[string]bool{}, handed: map[string]net.Conn{}}
	// Health checks ping a connection that read nothing for 30 s (or the
	// IdleTimeout, if shorter). x/net/http2 keeps a closed connection's
	// ClientConn (about 13 KB once hookedConn let go of its TLS state)
	// reachable from that timer until it fires.
	t.h2 = &http2.Transport{IdleConnTimeout: cfg.IdleTimeout, ReadIdleTimeout: min(30*time.Second, cfg.IdleTimeout), PingTimeout: 15 * time.Second}
	t.maxConns = cfg.MaxConnsPerHost
	idlePerHost := cmp.Or(cfg.MaxIdleConnsPerHost, 8)
	t.h1base = http.Transport{
		// HTTP/2 is this Transport's own (h2 above); an empty map keeps
		// net/http from trying it on connections it cannot use.
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConns:        cfg.MaxIdleConns,
		MaxIdleConnsPerHost: idlePerHost,
		MaxConnsPerHost:     cfg.MaxConnsPerHost,
		IdleConnTimeout:     cfg.IdleTimeout,
	}
	t.h1s = map[string]*http.Transport{}
	// Protocol upgrades (WebSocket): HTTP/1.1 alone, a connection each.
	icfg := cfg.internal()
	icfg.HTTP1Only = true
	if t.up, err = client.New(icfg); err != nil {
		return nil, err
	}
	// Plain http URLs: net/http's own transport, through the same proxy.
	t.plain = &http.Transport{Proxy: t.d.c.ProxyForRequest, MaxIdleConns: cfg.MaxIdleConns, MaxIdleConnsPerHost: idlePerHost,
		MaxConnsPerHost: cfg.MaxConnsPerHost, IdleConnTimeout: cfg.IdleTimeout}
	return t, nil
}

// errPoolFull says a dial was not made: the pool already holds
// MaxConnsPerHost connections that take requests.
var errPoolFull = errors.New("reqmtls: MaxConnsPerHost connections are pooled")

// testHookBeforeDial, when set by a test, runs between a request's finding
// no connection to take and its dial.
var testHookBeforeDial func()

// errH2 says a connection meant for HTTP/1.1 negotiated HTTP/2.
var errH2 = errors.New("reqmtls: the server chose HTTP/2 on a connection for HTTP/1.1")

// RoundTrip sends req. Over https it uses a kept-alive HTTP/2 connection to
// the host when one can take the request, else dials one; a host whose
// server chose HTTP/1.1 is served through a pool of HTTP/1.1 connections.
// A request the server did not process (a refused stream, a stream above
// the last of its GOAWAY, a connection closing before the request went) is
// sent again, with its body from GetBody, up to five times. One that fails
// because its pooled connection went away is sent once more on a new one,
// when it is idempotent (GET, HEAD, OPTIONS, TRACE) and has no body; a
// refusal by the server (a TLS alert) never is.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	req, err := t.d.c.Sign(req)
	if err != nil {
		return nil, publicError(err)
	}
	if req.URL.Scheme != "https" {
		return t.plain.RoundTrip(req)
	}
	addr := hostPort(req.URL)
	proxy, err := t.d.c.ProxyForRequest(req)
	if err != nil {
		return nil, publicError(err)
	}
	// Pools are by proxy and address: a connection through one proxy
	// is not one through another, or a direct one.
	key := addr
	if proxy != nil {
		key = proxy.String() + " " + addr
	}
	refused := 0
	if req.Header.Get("Upgrade") != "" {
		// HTTP/2 carries no protocol switch: a connection of its own,
		// over HTTP/1.1, whose 101 response body is the tunnel.
		resp, err := t.h1For(proxy, true).RoundTrip(req)
		if err != nil {
			return nil, publicError(t.d.c.Explain(err, "request"))
		}
		return resp, nil
	}
	for attempt := 0; ; attempt++ {
		t.mu.Lock()
		h1 := t.h1only[key]
		var cc *h2Conn
		var stale []*h2Conn
		if !h1 {
			// A host gone to HTTP/1.1 takes no stream of a connection
			// still pooled for it: a reservation would be kept forever.
			cc, stale = t.idleH2Locked(key)
		}
		full := t.maxConns > 0 && t.usableLocked(key) >= t.maxConns
		t.mu.Unlock()
		for _, c := range stale {
			c.Close()
		}
		if cc == nil && full && !h1 {
			// MaxConnsPerHost: wait for a stream on a connection we
			// have, not for a new one.
			select {
			case <-req.Context().Done():
				return nil, waitError(req.Context(), addr)
			case <-time.After(5 * time.Millisecond):
			}
			attempt--
			continue
		}
		if h1 {
			resp, err := t.h1For(proxy, false).RoundTrip(req)
			if errors.Is(err, errH2) && attempt == 0 {
				continue // the host moved to HTTP/2: dial again
			}
			if err != nil {
				return nil, publicError(t.d.c.Explain(err, "request"))
			}
			return resp, nil
		}
		if cc == nil {
			if testHookBeforeDial != nil {
				testHookBeforeDial()
			}
			var err error
			if cc, err = t.dialH2(req.Context(), key, addr, req.URL.Hostname(), proxy); errors.Is(err, errPoolFull) {
				attempt--
				continue
			} else if err != nil {
				return nil, err
			}
			if cc == nil {
				continue // the server chose HTTP/1.1
			}
		}
		if t.maxConns > 0 && !cc.opened.CompareAndSwap(false, true) {
			awaitSettings(req.Context(), cc)
		}
		resp, err := cc.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		msg := err.Error()
		notUsable := strings.Contains(msg, "client conn not usable") // nothing was sent
		if st := cc.State(); !st.Closed && !st.Closing && notUsable {
			// Full: another request took the last stream first. Nothing
			// was sent; look for a stream again.
			attempt--
			continue
		}
		var se http2.StreamError
		unprocessed := errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream || notUsable ||
			strings.Contains(msg, "received Server's graceful shutdown GOAWAY")
		if unprocessed && refused < 5 && (req.Body == nil || req.GetBody != nil) {
			// The server did not process the request: it refused the
			// stream (RFC 9113, Section 8.7; over its stream limit
			// before its SETTINGS reached us), or its GOAWAY came with
			// a last stream below ours, or the connection was closing
			// before the request was sent. Again, on this connection or
			// another, with the body from the start, whatever the
			// method.
			refused++
			if req.Body != nil {
				body, gerr := req.GetBody()
				if gerr != nil {
					return nil, gerr
				}
				req = req.Clone(req.Context())
				req.Body = body
			}
			attempt--
			continue
		}
		err = t.explainH2(cc, err)
		var e *Error
		if st := cc.State(); attempt == 0 && (st.Closed || st.Closing) && req.Body == nil && idempotent(req.Method) && !(errors.As(err, &e) && e.Alert != "") {
			// The connection went away under us (a GOAWAY, an idle
			// close, a read error; a stream reset with PROTOCOL_ERROR,
			// after which HTTP/2 takes no new request on it): once more
			// on a new one. Its other requests run on (idleH2Locked).
			continue
		}
		return nil, err
	}
}

func idempotent(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// idleH2Locked returns a pooled HTTP/2 connection to addr with a stream
// reserved for the request (so that CloseIdleConnections leaves it and no
// other request takes the stream; RoundTrip uses the reservation), and the
// pooled ones to close (after t.mu is let go: a close may wait on its
// peer). A closed connection
// leaves the pool. One that takes no new request (after a GOAWAY, or a
// stream reset with PROTOCOL_ERROR) stays until HTTP/2 closes it after its
// last request, not counted against MaxConnsPerHost, as net/http does
// not: a request waiting on it to end would wait for as long as a stream
// on it lasts. One such that runs none is closed.
func (t *Transport) idleH2Locked(addr string) (found *h2Conn, stale []*h2Conn) {
	pool := t.h2pool[addr]
	kept := pool[:0]
	for _, cc := range pool {
		st := cc.State()
		if st.Closed {
			continue
		}
		if st.Closing {
			if st.StreamsActive == 0 && st.StreamsReserved == 0 {
				stale = append(stale, cc)
				continue
			}
			kept = append(kept, cc)
			continue
		}
		kept = append(kept, cc)
		if found == nil && cc.ReserveNewRequest() {
			found = cc
		}
	}
	clear(pool[len(kept):])
	if len(kept) == 0 {
		delete(t.h2pool, addr)
	} else {
		t.h2pool[addr] = kept
	}
	return found, stale
}

// usableLocked counts the pooled connections to addr that take new
// requests.
func (t *Transport) usableLocked(addr string) int {
	n := 0
	for _, cc := range t.h2pool[addr] {
		if st := cc.State(); !st.Closed && !st.Closing {
			n++
		}
	}
	return n
}

// awaitSettings waits, under MaxConnsPerHost, until the server's first
// SETTINGS have come on cc (or cc closes, or ctx ends). Before them HTTP/2
// lets a client open up to 100 streams; a server allowing fewer resets
// the streams over its limit, with PROTOCOL_ERROR when the stream crossed
// its SETTINGS on the way, and HTTP/2 then takes no new request on the
// connection: one more connection. The first request on a connection does
// not wait.
func awaitSettings(ctx context.Context, cc *h2Conn) {
	for {
		if st := cc.State(); st.MaxConcurrentStreams != 0 || st.Closed || st.Closing || ctx.Err() != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// dialH2 returns a new HTTP/2 connection to addr, dialing once for all
// the requests that ask at the same time. When the server chooses HTTP/1.1
// the host is remembered as such, the connection is handed to the HTTP/1.1
// pool, and dialH2 returns nil.
func (t *Transport) dialH2(ctx context.Context, key, addr, host string, proxy *url.URL) (*h2Conn, error) {
	t.mu.Lock()
	call, ok := t.dialing[key]
	if !ok && t.maxConns > 0 && t.usableLocked(key) >= t.maxConns {
		// Another request's dial pooled a connection since this one
		// found none: it takes a stream of those instead.
		t.mu.Unlock()
		return nil, errPoolFull
	}
	if !ok {
		// The dial is shared: it runs under a context no single caller
		// owns (the values of the first, none of its deadline or
		// cancellation), bounded by the Timeout alone.
		call = &dialCall{done: make(chan struct{})}
		t.dialing[key] = call
		go func() {
			call.cc, call.err = t.dialH2Once(context.WithoutCancel(ctx), key, addr, host, proxy)
			t.mu.Lock()
			delete(t.dialing, key)
			t.mu.Unlock()
			close(call.done)
		}()
	}
	t.mu.Unlock()
	// Each caller waits under its own context, the first one too.
	select {
	case <-call.done:
		return call.cc, call.err
	case <-ctx.Done():
		return nil, waitError(ctx, addr)
	}
}

// waitError is the error of a request whose context ended while it waited
// for a dial to addr.
func waitError(ctx context.Context, addr string) error {
	msg := "dial " + addr + ": the request was canceled"
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		msg = "dial " + addr + ": the request's own deadline passed"
	}
	return &Error{Msg: msg, Err: ctx.Err()}
}

func (t *Transport) dialH2Once(ctx context.Context, key, addr, host string, proxy *url.URL) (*h2Conn, error) {
	tc, hs, err := t.d.c.DialTLS(ctx, addr, host, proxy)
	if err != nil {
		return nil, publicError(err)
	}
	t.handshake(addr, hs)
	t.mu.Lock()
	defer t.mu.Unlock()
	if hs.ALPN != "h2" {
		if len(t.h1only) >= maxH1Hosts {
			clear(t.h1only)
		}
		t.h1only[key] = true
		if old := t.handed[key]; old != nil {
			old.Close()
		}
		t.handed[key] = tc
		return nil, nil
	}
	// The pool forgets the connection when HTTP/2 closes it (idle,
	// GOAWAY, an error), so that a crawl of many hosts leaves nothing
	// behind for those it does not visit again.
	// The hook runs on a goroutine of its own: connections are closed
	// with t.mu held (here, if NewClientConn fails; CloseIdleConnections),
	// and hc.cc is set under t.mu.
	hc := newHookedConn(tc)
	hc.onClose = func() {
		go func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			if hc.cc != nil {
				t.forgetH2Locked(key, hc.cc)
				hc.cc = nil // nothing the closed connection keeps reaches its TLS state
			}
		}()
	}
	cc, err := t.h2.NewClientConn(hc)
	if err != nil {
		tc.Close()
		return nil, publicError(err)
	}
	hc.cc = &h2Conn{ClientConn: cc, tc: tc}
	t.h2pool[key] = append(t.h2pool[key], hc.cc)
	return hc.cc, nil
}

// hookedConn is the connection under an HTTP/2 ClientConn. When closed it
// calls onClose once and lets go of the TLS connection, whose buffers and
// state are most of a connection's memory: x/net/http2 keeps a closed
// ClientConn reachable from its health-check timer for ReadIdleTimeout,
// and with it whatever the ClientConn holds.
type hookedConn struct {
	tc      atomic.Pointer[client.AlertConn]
	local   net.Addr
	remote  net.Addr
	state   tls.ConnectionState
	once    sync.Once
	onClose func()
	cc      *h2Conn // guarded by the Transport's mu
}

func newHookedConn(tc *client.AlertConn) *hookedConn {
	c := &hookedConn{local: tc.LocalAddr(), remote: tc.RemoteAddr(), state: tc.ConnectionState()}
	c.tc.Store(tc)
	return c
}

func (c *hookedConn) Read(p []byte) (int, error) {
	if tc := c.tc.Load(); tc != nil {
		return tc.Read(p)
	}
	return 0, net.ErrClosed
}

func (c *hookedConn) Write(p []byte) (int, error) {
	if tc := c.tc.Load(); tc != nil {
		return tc.Write(p)
	}
	return 0, net.ErrClosed
}

func (c *hookedConn) Close() error {
	tc := c.tc.Swap(nil)
	if tc == nil {
		return net.ErrClosed
	}
	err := tc.Close()
	c.once.Do(c.onClose)
	return err
}

func (c *hookedConn) SetDeadline(t time.Time) error { return c.deadline(t, net.Conn.SetDeadline) }
func (c *hookedConn) SetReadDeadline(t time.Time) error {
	return c.deadline(t, net.Conn.SetReadDeadline)
}
func (c *hookedConn) SetWriteDeadline(t time.Time) error {
	return c.deadline(t, net.Conn.SetWriteDeadline)
}

func (c *hookedConn) deadline(t time.Time, set func(net.Conn, time.Time) error) error {
	if tc := c.tc.Load(); tc != nil {
		return set(tc, t)
	}
	return net.ErrClosed
}

func (c *hookedConn) LocalAddr() net.Addr                  { return c.local }
func (c *hookedConn) RemoteAddr() net.Addr                 { return c.remote }
func (c *hookedConn) ConnectionState() tls.ConnectionState { return c.state }

// forgetH2Locked takes cc out of the pool of addr.
func (t *Transport) forgetH2Locked(addr string, cc *h2Conn) {
	pool := t.h2pool[addr]
	for i, c := range pool {
		if c == cc {
			pool = append(pool[:i], pool[i+1:]...)
			break
		}
	}
	if len(pool) == 0 {
		delete(t.h2pool, addr)
	} else {
		t.h2pool[addr] = pool
	}
}

// h1For returns the HTTP/1.1 pool for connections through proxy (nil for
// direct ones), for upgrades or for ordinary requests.
func (t *Transport) h1For(proxy *url.URL, upgrade bool) *http.Transport {
	name := ""
	if proxy != nil {
		name = proxy.String()
	}
	if upgrade {
		name = "upgrade " + name
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if h, ok := t.h1s[name]; ok {
		return h
	}
	h := t.h1base.Clone()
	h.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	if upgrade {
		// A connection each: its 101 response body is the tunnel.
		h.DisableKeepAlives = true
		h.DialTLSContext = func(ctx context.Context, _, addr string) (net.Conn, error) {
			return t.dialVia(ctx, t.up, addr, proxy)
		}
	} else {
		h.DialTLSContext = func(ctx context.Context, _, addr string) (net.Conn, error) {
			return t.dialH1(ctx, addr, proxy)
		}
	}
	t.h1s[name] = h
	return h
}

// dialH1 is an HTTP/1.1 pool's dial: the connection dialH2 handed over,
// if any, else a new one.
func (t *Transport) dialH1(ctx context.Context, addr string, proxy *url.URL) (net.Conn, error) {
	key := addr
	if proxy != nil {
		key = proxy.String() + " " + addr
	}
	t.mu.Lock()
	c := t.handed[key]
	delete(t.handed, key)
	t.mu.Unlock()
	if c != nil {
		return c, nil
	}
	tc, err := t.dialVia(ctx, t.d.c, addr, proxy)
	if err != nil {
		return nil, err
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		tc.Close()
		t.mu.Lock()
		delete(t.h1only, key)
		t.mu.Unlock()
		return nil, errH2
	}
	return tc, nil
}

// dialVia dials addr with c, through proxy when not nil, and reports the
// handshake.
func (t *Transport) dialVia(ctx context.Context, c *client.Client, addr string, proxy *url.URL) (*client.AlertConn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	tc, hs, err := c.DialTLS(ctx, addr, host, proxy)
	if err != nil {
		return nil, err
	}
	t.handshake(addr, hs)
	return tc, nil
}

func (t *Transport) handshake(addr string, hs *client.Handshake) {
	if t.onHS != nil {
		t.onHS(addr, handshakeOf(hs))
	}
}

// explainH2 names the TLS alert behind an HTTP/2 failure, if there was one,
// without disturbing a connection that still serves other requests.
func (t *Transport) explainH2(cc *h2Conn, err error) error {
	err = cc.tc.AlertOr(err, cc.ClientConn)
	return publicError(t.d.c.Explain(err, "request"))
}

// CloseIdleConnections closes connections that carry no request.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	h1s := make([]*http.Transport, 0, len(t.h1s))
	for _, h := range t.h1s {
		h1s = append(h1s, h)
	}
	t.mu.Unlock()
	for _, h := range h1s {
		h.CloseIdleConnections()
	}
	t.plain.CloseIdleConnections()
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr, pool := range t.h2pool {
		kept := pool[:0]
		for _, cc := range pool {
			if st := cc.State(); st.StreamsActive == 0 && st.StreamsReserved == 0 {
				cc.Close()
				continue
			}
			kept = append(kept, cc)
		}
		if len(kept) == 0 {
			delete(t.h2pool, addr)
		} else {
			t.h2pool[addr] = kept
		}
	}
	for addr, c := range t.handed {
		c.Close()
		delete(t.handed, addr)
	}
}

// hostPort returns the host:port of an https URL, an internationalised
// host name in its ASCII form, as the dial and the pools use it.
func hostPort(u *url.URL) string {
	host := u.Hostname()
	if a, err := idna.Lookup.ToASCII(host); err == nil {
		host = a
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(host, port)
}
