// Package client is the request-mTLS client: HTTPS requests whose
// ClientHello carries TLS flags (draft-ietf-tls-tlsflags), by default the
// request-mTLS flag 80 of draft-jhoyla-req-mtls-flag-02, sending a client
// certificate when the server asks for one.
package client

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
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

	utls "github.com/refraction-networking/utls"
	"golang.org/x/net/http2"

	"github.com/req-mtls/req-mtls/internal/safetext"
	"github.com/req-mtls/req-mtls/internal/tlsclient"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// Config configures a Client.
type Config struct {
	// Flags to send in the ClientHello; empty sends no tls_flags extension.
	Flags tlsflags.Set
	// Codepoint of the tls_flags extension (default 0xfe01).
	Codepoint uint16
	// CertFile and KeyFile hold the client certificate, sent when the
	// server asks. Both empty means no certificate. The files are re-read
	// when they change between connections.
	CertFile, KeyFile string
	// GetClientCertificate, instead of CertFile and KeyFile, gives the
	// certificate when a server asks, as tls.Config's does: its key may be
	// any crypto.Signer (a KMS, an HSM). A nil or empty certificate sends
	// none.
	GetClientCertificate func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
	// RootCAs verifies the server; nil means the system roots.
	RootCAs *x509.CertPool
	// Time is the clock the server's certificate is checked against
	// (default time.Now).
	Time func() time.Time
	// ServerName, when set, is sent as SNI and verified in the server's
	// certificate instead of the URL's host (the Host header stays the
	// URL's).
	ServerName string
	// InsecureSkipVerify accepts any server certificate: anyone on the
	// path can then pose as the server. For tests against servers whose
	// root is not at hand.
	InsecureSkipVerify bool
	// Signing, if set, signs every request (Web Bot Auth).
	Signing *Signing
	// Proxy chooses a proxy for a request, as http.Transport.Proxy does
	// (http, https, socks5 and socks5h); nil for direct connections.
	// HTTPS goes through a CONNECT (or SOCKS5) tunnel, the handshake
	// inside it unchanged.
	Proxy func(*http.Request) (*url.URL, error)
	// DialControl, if set, is the net.Dialer's ControlContext for direct
	// connections to servers (not to a proxy): an error refuses the
	// address before anything is sent to it.
	DialControl func(ctx context.Context, network, address string, c syscall.RawConn) error
	// Resolve maps "host:port" (as net.JoinHostPort writes it) to the
	// "addr:port" to connect to instead, as curl's --resolve does; SNI,
	// verification and the Host header keep the URL's host. Hosts match
	// without regard to case. Through a proxy it is not used: the proxy
	// is asked for the host by name.
	Resolve map[string]string
	// Timeout bounds each request, connection and handshake included
	// (default 30 s); for a Transport, connecting (http URLs too) and the
	// handshake.
	Timeout time.Duration
	// TLS12Only offers TLS 1.2 alone (no flags can be sent then).
	TLS12Only bool
	// HTTP1Only offers http/1.1 alone in ALPN: for protocol upgrades
	// (WebSocket), which HTTP/2 does not carry.
	HTTP1Only bool
	// Groups overrides the key exchange groups offered (see
	// tlsclient.Hello.Groups); for tests and benchmarks.
	Groups []utls.CurveID
	// Resume keeps a session cache so that new connections resume.
	Resume bool
	// SessionCache is the cache used with Resume (default: a new one for
	// this Client). Clients may share one.
	SessionCache utls.ClientSessionCache
	// KeyLog receives TLS secrets in NSS key log format.
	KeyLog io.Writer
	// Warn receives warnings meant for a person (a failed certificate
	// reload, say). May be nil.
	Warn func(format string, a ...any)
	// IdleTimeout closes an HTTP/2 connection idle that long (default
	// 1 s: x/net/http2 keeps a closed connection reachable until then,
	// which under -n load holds tens of megabytes).
	IdleTimeout time.Duration
}

// A Client makes requests. Requests made with the same Conn reuse its
// connection; Dial opens a new one each time.
type Client struct {
	cfg    Config
	certs  *certSource
	getter atomic.Value // string: the session-cache ID of the certificate GetClientCertificate gave last
	cache  utls.ClientSessionCache
	//lint:ignore SA1019 see Conn.h2: x/net/http2 is the HTTP/2 client that takes an established uTLS connection.
	h2 *http2.Transport
}

// New checks cfg and loads the client certificate, if any.
func New(cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Second
	}
	//lint:ignore SA1019 see Conn.h2
	c := &Client{cfg: cfg, h2: &http2.Transport{IdleConnTimeout: cfg.IdleTimeout}}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("a client certificate needs both CertFile and KeyFile")
	}
	if cfg.Signing != nil {
		if err := cfg.Signing.check(); err != nil {
			return nil, err
		}
	}
	if cfg.GetClientCertificate != nil && cfg.CertFile != "" {
		return nil, errors.New("give the client certificate as files or through GetClientCertificate, not both")
	}
	c.getter.Store("")
	if len(cfg.Resolve) > 0 {
		// Keys in lower case, as resolve looks them up.
		m := make(map[string]string, len(cfg.Resolve))
		for k, v := range cfg.Resolve {
			host, port, err := net.SplitHostPort(k)
			if err != nil {
				return nil, fmt.Errorf("Config.Resolve %q: want host:port (%v)", k, err)
			}
			m[net.JoinHostPort(strings.ToLower(host), port)] = v
		}
		c.cfg.Resolve = m
	}
	if cfg.CertFile != "" {
		c.certs = &certSource{certFile: cfg.CertFile, keyFile: cfg.KeyFile, warn: cfg.Warn}
		if err := c.certs.load(); err != nil {
			return nil, err
		}
	}
	if cfg.Resume {
		c.cache = cfg.SessionCache
		if c.cache == nil {
			c.cache = utls.NewLRUClientSessionCache(64)
		}
	}
	return c, nil
}

func alpn(http1Only bool) []string {
	if http1Only {
		return []string{"http/1.1"}
	}
	return []string{"h2", "http/1.1"}
}

// fromGetter asks get for the certificate, for the request cri, and notes
// which one it gave for the session cache.
func (c *Client) fromGetter(get func(*tls.CertificateRequestInfo) (*tls.Certificate, error), cri *utls.CertificateRequestInfo) (*utls.Certificate, error) {
	req := &tls.CertificateRequestInfo{AcceptableCAs: cri.AcceptableCAs, Version: cri.Version}
	for _, s := range cri.SignatureSchemes {
		req.SignatureSchemes = append(req.SignatureSchemes, tls.SignatureScheme(s))
	}
	tc, err := get(req)
	if err != nil {
		return nil, fmt.Errorf("GetClientCertificate: %w", err)
	}
	if tc == nil || len(tc.Certificate) == 0 {
		return nil, nil
	}
	leaf := tc.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(tc.Certificate[0]); err != nil {
			return nil, fmt.Errorf("GetClientCertificate: the certificate does not parse: %w", err)
		}
	}
	sum := sha256.Sum256(tc.Certificate[0])
	c.getter.Store(hex.EncodeToString(sum[:16]))
	return &utls.Certificate{Certificate: tc.Certificate, PrivateKey: tc.PrivateKey, Leaf: leaf}, nil
}

// ended explains a failure of a dial step under ctx (the Timeout's, derived
// from parent) when a context ended it, naming the one whose deadline
// fired: the caller's own, or the Timeout. It returns nil otherwise.
func (c *Client) ended(parent, ctx context.Context, err error, during string) *Error {
	// A dialer's timer for a deadline may fire a moment before the
	// context's: a timeout once a deadline has passed is that deadline's.
	var ne net.Error
	timedOut := errors.As(err, &ne) && ne.Timeout()
	passed := func(ctx context.Context) bool {
		dl, ok := ctx.Deadline()
		return ok && !time.Now().Before(dl)
	}
	switch {
	case errors.Is(parent.Err(), context.DeadlineExceeded) || timedOut && passed(parent):
		return &Error{Err: err, Msg: fmt.Sprintf("%s: the request's own deadline passed (before the %v timeout)", during, c.cfg.Timeout)}
	case parent.Err() != nil:
		return &Error{Err: err, Msg: during + ": the request was canceled"}
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || timedOut && passed(ctx):
		return &Error{Err: err, Msg: fmt.Sprintf("%s: timed out after %v", during, c.cfg.Timeout)}
	}
	return nil
}

// HasCertificate reports whether a client certificate is configured.
func (c *Client) HasCertificate() bool { return c.certs != nil || c.cfg.GetClientCertificate != nil }

// Handshake describes one TLS handshake, for -v and -json.
type Handshake struct {
	Version       string        `json:"tls_version"`
	CipherSuite   string        `json:"cipher_suite"`
	ALPN          string        `json:"alpn"`
	FlagsSent     tlsflags.Set  `json:"tls_flags_sent"`
	Codepoint     string        `json:"tls_flags_codepoint,omitempty"`
	CertRequested bool          `json:"cert_requested"`
	RequestedCAs  []string      `json:"cert_request_cas,omitempty"`
	CertSent      bool          `json:"cert_sent"`
	CASMatch      *bool         `json:"cert_issuer_listed,omitempty"`
	Resumed       bool          `json:"resumed"`
	ServerName    string        `json:"server_name"`
	Proxy         string        `json:"proxy,omitempty"` // the proxy tunnelled through, its password hidden
	Duration      time.Duration `json:"handshake_ns"`
	// Addr is the address connected to (after Config.Resolve), or asked
	// of the proxy.
	Addr string `json:"addr"`
	// ServerCert describes the server's certificate (its leaf),
	// PeerCertificates is the chain it sent. On a resumed session they
	// are those of the original handshake.
	ServerCert       *CertInfo           `json:"server_certificate,omitempty"`
	PeerCertificates []*x509.Certificate `json:"-"`
	// Verified reports whether the server's certificate was verified
	// (false with InsecureSkipVerify).
	Verified bool `json:"server_verified"`
}

// CertInfo describes a certificate for a person; names taken from it are
// escaped for printing.
type CertInfo struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	SANs     []string  `json:"sans,omitempty"` // DNS names, then IP addresses, then URIs and email addresses
	NotAfter time.Time `json:"not_after"`
	SHA256   string    `json:"sha256"` // hex, of the certificate's DER
}

// DescribeCert returns a CertInfo for c.
func DescribeCert(c *x509.Certificate) *CertInfo {
	sum := sha256.Sum256(c.Raw)
	info := &CertInfo{
		Subject:  safetext.Escape(c.Subject.String()),
		Issuer:   safetext.Escape(c.Issuer.String()),
		NotAfter: c.NotAfter.UTC(),
		SHA256:   hex.EncodeToString(sum[:]),
	}
	for _, n := range c.DNSNames {
		info.SANs = append(info.SANs, "DNS:"+safetext.Escape(n))
	}
	for _, ip := range c.IPAddresses {
		info.SANs = append(info.SANs, "IP:"+ip.String())
	}
	for _, u := range c.URIs {
		info.SANs = append(info.SANs, "URI:"+safetext.Escape(u.String()))
	}
	for _, e := range c.EmailAddresses {
		info.SANs = append(info.SANs, "email:"+safetext.Escape(e))
	}
	return info
}

// Conn is one connection to a server, over HTTP/2 or HTTP/1.1.
type Conn struct {
	tc *AlertConn
	//lint:ignore SA1019 net/http's replacement (Transport.NewClientConn) dials for itself and cannot take an established uTLS connection; x/net/http2 can.
	h2        *http2.ClientConn
	br        *bufio.Reader
	Handshake Handshake
}

// Dial connects to the host of u and completes a TLS handshake, then sets up
// HTTP/2 or HTTP/1.1 as the server chose.
func (c *Client) Dial(ctx context.Context, u *url.URL) (*Conn, error) {
	if u.Scheme != "https" {
		return nil, fmt.Errorf("URL %q: only https is supported", u.String())
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	proxy, err := c.ProxyFor(u)
	if err != nil {
		return nil, err
	}
	tc, hs, err := c.DialTLS(ctx, addr, u.Hostname(), proxy)
	if err != nil {
		return nil, err
	}
	conn := &Conn{tc: tc, Handshake: *hs}
	if hs.ALPN == "h2" {
		//lint:ignore SA1019 see Conn.h2
		conn.h2, err = c.h2.NewClientConn(tc)
		if err != nil {
			err = conn.alertOr(err)
			tc.Close()
			return nil, c.explain(err, "start HTTP/2")
		}
	} else {
		conn.br = bufio.NewReader(tc)
	}
	return conn, nil
}

// DialTLS connects to addr (host:port, or where Config.Resolve sends it) and
// completes a TLS handshake with the project's ClientHello, serverName (or
// Config.ServerName) as SNI and for verification, and ALPN h2 and
// http/1.1. Connecting and the handshake are bounded by Config.Timeout
// together; a failure says which of the two it was.
func (c *Client) DialTLS(ctx context.Context, addr, serverName string, proxy *url.URL) (*AlertConn, *Handshake, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()

	if c.cfg.ServerName != "" {
		serverName = c.cfg.ServerName
	}
	if proxy == nil {
		// Through a proxy, the proxy is asked for the host by name and
		// resolves it, as curl does: Resolve is for direct connections.
		addr = c.resolve(addr)
	}
	hs := &Handshake{FlagsSent: c.cfg.Flags, ServerName: serverName, Addr: addr}
	if !c.cfg.Flags.IsEmpty() {
		cp := c.cfg.Codepoint
		if cp == 0 {
			cp = tlsflags.CodepointExperimental
		}
		hs.Codepoint = fmt.Sprintf("0x%04x", cp)
	}
	var mu sync.Mutex // GetClientCertificate runs on the handshake goroutine
	// The certificate this connection sends, if asked, and the sessions
	// it may resume: those made with the same certificate.
	var cert *utls.Certificate
	cache := c.cache
	switch {
	case c.certs != nil:
		var id string
		cert, id = c.certs.current()
		if cache != nil {
			cache = certCache{ClientSessionCache: cache, id: id}
		}
	case c.cfg.GetClientCertificate != nil && cache != nil:
		// The certificate is known only when the server asks: sessions
		// are those of the one it gave last, and a full handshake that
		// brings another moves on to that one's.
		cache = certCache{ClientSessionCache: cache, id: "get:" + c.getter.Load().(string)}
	}
	ucfg := &utls.Config{
		RootCAs:            c.cfg.RootCAs,
		Time:               c.cfg.Time,
		InsecureSkipVerify: c.cfg.InsecureSkipVerify,
		ServerName:         serverName,
		NextProtos:         alpn(c.cfg.HTTP1Only),
		KeyLogWriter:       c.cfg.KeyLog,
		ClientSessionCache: cache,
		GetClientCertificate: func(cri *utls.CertificateRequestInfo) (*utls.Certificate, error) {
			mu.Lock()
			defer mu.Unlock()
			hs.CertRequested = true
			for _, raw := range cri.AcceptableCAs {
				hs.RequestedCAs = append(hs.RequestedCAs, dnString(raw))
			}
			if get := c.cfg.GetClientCertificate; get != nil {
				var err error
				if cert, err = c.fromGetter(get, cri); err != nil {
					return nil, err
				}
			}
			if cert == nil {
				return &utls.Certificate{}, nil
			}
			// Send the certificate even when the server's list does not
			// name its issuer: with request mTLS the server asked
			// because our flag said we hold one.
			if len(cri.AcceptableCAs) > 0 && cert.Leaf != nil {
				listed := false
				for _, raw := range cri.AcceptableCAs {
					if string(raw) == string(cert.Leaf.RawIssuer) {
						listed = true
					}
				}
				hs.CASMatch = &listed
			}
			hs.CertSent = true
			return cert, nil
		},
	}
	hello := tlsclient.Hello{
		Flags:      c.cfg.Flags,
		Codepoint:  c.cfg.Codepoint,
		NextProtos: ucfg.NextProtos,
		Resumable:  c.cfg.Resume,
		TLS12Only:  c.cfg.TLS12Only,
		Groups:     c.cfg.Groups,
	}
	start := time.Now()
	// Connect, then shake hands, each failure told as its own: a server
	// that accepts and never answers the ClientHello is not one that
	// cannot be reached.
	var raw net.Conn
	var err error
	if proxy != nil {
		hs.Proxy = proxy.Redacted()
		raw, err = c.dialTunnel(ctx, proxy, addr)
	} else {
		raw, err = (&net.Dialer{ControlContext: c.cfg.DialControl}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, nil, c.connectError(parent, ctx, err, addr, proxy, fmt.Sprintf("proxy %s (tunnel to %s)", redacted(proxy), addr))
	}
	tc, err := hello.Client(raw, ucfg)
	if err != nil {
		raw.Close()
		return nil, nil, err
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		if e := c.ended(parent, ctx, err, "TLS handshake with "+addr); e != nil {
			e.Hint = "the server accepted the connection but did not complete the handshake: is it a TLS server on that port? Raise Timeout if it is only slow"
			return nil, nil, e
		}
		return nil, nil, c.explain(err, "TLS handshake with "+addr)
	}
	st := tc.ConnectionState()
	mu.Lock()
	defer mu.Unlock()
	hs.Duration = time.Since(start)
	hs.Version = tls.VersionName(st.Version)
	hs.CipherSuite = tls.CipherSuiteName(st.CipherSuite)
	hs.ALPN = st.NegotiatedProtocol
	hs.Resumed = st.DidResume
	hs.PeerCertificates = st.PeerCertificates
	if len(st.PeerCertificates) > 0 {
		hs.ServerCert = DescribeCert(st.PeerCertificates[0])
	}
	hs.Verified = !c.cfg.InsecureSkipVerify
	return &AlertConn{Conn: tc}, hs, nil
}

// DialPlain connects, for a plain http request, to addr: the site's, or
// that of proxy (nil for none), which forwards the request. Connecting
// is bounded by Config.Timeout, as for DialTLS, and a failure is told
// the same way.
func (c *Client) DialPlain(ctx context.Context, addr string, proxy *url.URL) (net.Conn, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	d := &net.Dialer{}
	if proxy == nil {
		// A direct connection: the same rule as for https.
		d.ControlContext = c.cfg.DialControl
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, c.connectError(parent, ctx, err, addr, proxy, "proxy "+redacted(proxy))
	}
	return raw, nil
}

// connectError explains a failure to connect to addr, or through proxy
// when not nil (the step named viaProxy), under ctx, the Timeout's,
// derived from parent.
func (c *Client) connectError(parent, ctx context.Context, err error, addr string, proxy *url.URL, viaProxy string) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if proxy != nil {
		// The proxy failed, not the site: say so, and where to look.
		e := c.ended(parent, ctx, err, viaProxy)
		if e == nil && !errors.As(c.explain(err, viaProxy), &e) {
			e = &Error{Err: err, Msg: viaProxy + ": " + err.Error()}
		}
		e.Hint = "check the proxy's URL (Proxy, HTTPS_PROXY) and that it is running"
		return e
	}
	if e := c.ended(parent, ctx, err, "connect to "+addr); e != nil {
		e.Hint = "nothing answered at that address: check the host, the port and any firewall; raise Timeout if the network is slow"
		return e
	}
	errors.As(c.explain(err, "connect to "+addr), &e)
	return e
}

// redacted is u's text with its password hidden, "" for nil.
func redacted(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Redacted()
}

// resolve returns where to connect for addr, after Config.Resolve.
func (c *Client) resolve(addr string) string {
	if len(c.cfg.Resolve) == 0 {
		return addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if to, ok := c.cfg.Resolve[net.JoinHostPort(strings.ToLower(host), port)]; ok {
		return to
	}
	return addr
}

// Close closes the connection.
func (cn *Conn) Close() error {
	if cn.h2 != nil {
		cn.h2.Close()
	}
	return cn.tc.Close()
}

// RoundTrip sends req on the connection and returns the response, its body
// unread. On HTTP/1.1 the body must be read and closed before the next
// request on the connection; on HTTP/2 requests may run at once. The
// request's context bounds it, and Config.Timeout too.
func (c *Client) RoundTrip(cn *Conn, req *http.Request) (*http.Response, error) {
	req, err := c.Sign(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(req.Context(), c.cfg.Timeout)
	req = req.WithContext(ctx)
	stop := func() bool { return false }
	var resp *http.Response
	if cn.h2 != nil {
		resp, err = cn.h2.RoundTrip(req)
	} else {
		stop = context.AfterFunc(ctx, func() { cn.tc.SetDeadline(time.Unix(1, 0)) })
		if err = req.Write(cn.tc); err == nil {
			resp, err = http.ReadResponse(cn.br, req)
		}
	}
	if err != nil {
		stop()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (after %v)", context.DeadlineExceeded, c.cfg.Timeout)
		}
		cancel()
		err = cn.alertOr(err)
		if _, isAlert := remoteAlert(err); !isAlert && cn.Handshake.CertRequested && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
			return nil, &Error{Err: err, Msg: "request: the server closed the connection right after the handshake",
				Hint: "it asked for a client certificate and probably refused the one sent (or the lack of one); its alert was lost"}
		}
		return nil, c.explain(err, "request")
	}
	resp.Body = &bodyCloser{ReadCloser: resp.Body, done: func() { stop(); cancel() }}
	return resp, nil
}

// bodyCloser ends a request's timer when its body is closed.
type bodyCloser struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *bodyCloser) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// Do sends req on the connection and returns the response with its body
// read (at most maxBody bytes).
func (c *Client) Do(ctx context.Context, cn *Conn, req *http.Request, maxBody int64) (*http.Response, []byte, error) {
	resp, err := c.RoundTrip(cn, req.WithContext(ctx))
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp, body, c.explain(err, "read response")
	}
	return resp, body, nil
}

// alertOr returns the TLS alert the server sent, if it sent one, or err. In
// TLS 1.3 the server judges the client certificate after the client's
// handshake is complete, so a refusal surfaces on the first read or write of
// the request; the alert itself is what explains it.
func (cn *Conn) alertOr(err error) error { return cn.tc.AlertOr(err, cn.h2) }

// An AlertConn is a TLS connection that remembers the first error a Read
// returned, so that the alert behind a failed request can be named without
// reading a connection that HTTP/2's read loop owns.
type AlertConn struct {
	*tlsclient.Conn
	mu      sync.Mutex
	readErr error
}

func (c *AlertConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.mu.Lock()
		if c.readErr == nil {
			c.readErr = err
		}
		c.mu.Unlock()
	}
	return n, err
}

// AlertOr returns the TLS alert that the connection received, if it did,
// or err: a failed request's own error (a broken pipe, say) often hides the
// alert that explains it. With h2, the HTTP/2 connection on c, the
// connection is read only once h2 has closed it, and waited for only when
// err says the connection was lost: a timeout or a stream's error leaves it
// serving other requests, untouched.
//
//lint:ignore SA1019 see Conn.h2
func (c *AlertConn) AlertOr(err error, h2 *http2.ClientConn) error {
	if _, ok := remoteAlert(err); ok {
		return err
	}
	recorded := func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if _, ok := remoteAlert(c.readErr); ok {
			return c.readErr
		}
		return nil
	}
	if rec := recorded(); rec != nil {
		return rec
	}
	if h2 != nil && !h2.State().Closed {
		if !connLost(err) {
			return err
		}
		// HTTP/2's read loop reads the alert, or closes the connection.
		for deadline := time.Now().Add(time.Second); !h2.State().Closed && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if rec := recorded(); rec != nil {
				return rec
			}
		}
		if rec := recorded(); rec != nil {
			return rec
		}
		if !h2.State().Closed {
			return err
		}
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, rerr := c.Conn.Read(make([]byte, 1))
	if _, ok := remoteAlert(rerr); ok {
		return rerr
	}
	return err
}

// connLost reports whether err says the connection itself went away.
func connLost(err error) bool {
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "EOF") || strings.Contains(msg, "connection lost") || strings.Contains(msg, "client conn not usable") ||
		strings.Contains(msg, "client conn could not be established") || strings.Contains(msg, "use of closed network connection")
}

// dnString formats a DER distinguished name from a CertificateRequest,
// escaped for printing: the server chose it.
func dnString(raw []byte) string {
	var rdn pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &rdn); err != nil || len(rest) > 0 {
		return fmt.Sprintf("(unparsable name %x)", raw)
	}
	var n pkix.Name
	n.FillFromRDNSequence(&rdn)
	return safetext.Escape(n.String())
}
