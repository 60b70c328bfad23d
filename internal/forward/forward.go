// Package forward is an HTTP forward (egress) proxy that gives any HTTP
// client request mTLS: a client that cannot set TLS flags (OpenSSL,
// BoringSSL, rustls, Node) points at it; for https it sends CONNECT, the
// proxy terminates that TLS with a leaf for the host signed by its own root
// (CA), and makes its own connection to the site with the request-mTLS
// client, flag 80 and certificate included. Two halves joined by net/http:
// the downstream side is an http.Server over the terminated tunnel, the
// upstream side a RoundTripper.
package forward

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/req-mtls/req-mtls/internal/bufpool"
)

// Config configures a Proxy.
type Config struct {
	CA *CA
	// Near carries the requests of clients that reach the proxy on a
	// loopback address; Far, those of the others (on Far's connections,
	// Destinations refuses what it refuses). They keep connections apart:
	// one a near client opened to a refused destination never serves a
	// far one.
	Near, Far Upstream
	// Destinations, if set, is the rule for the destinations of clients
	// that reach the proxy on a non-loopback address: a request to a
	// refused IP address is answered 403 at once; a name is checked as
	// Far's connections resolve it (Destinations.Control).
	Destinations *Destinations
	// FlagHost says whether a host gets the flags and the certificate.
	FlagHost func(host string) bool
	// Asked says what the last handshake with addr ("host:port") did:
	// whether the site asked for the certificate, and whether it was
	// sent; known is false before any.
	Asked func(addr string) (requested, sent, known bool)
	// Explain turns an upstream failure into a status (502, or 504 for a
	// timeout) and a message for the client.
	Explain func(error) (status int, msg string)
	// Auth, if set, checks a request's Proxy-Authorization: user and
	// password of Basic credentials; a request without valid ones gets a
	// 407.
	Auth func(user, password string) bool
	// HandshakeTimeout bounds the client's TLS handshake in a tunnel
	// (default 10 s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a tunnel idle between requests for that long
	// (default 2 minutes).
	IdleTimeout time.Duration
	// MaxTunnels caps the tunnels open at once: past it a CONNECT gets a
	// 503, and the first refusal after the proxy was below the cap is
	// logged. 0: no cap.
	MaxTunnels int
	// Log receives one line per request and the failures.
	Log *slog.Logger
}

// Upstream is how the proxy reaches sites.
type Upstream struct {
	// Flagged carries https requests to hosts that get the flags and
	// the certificate, Plain the other https requests, HTTP the http://
	// ones.
	Flagged, Plain, HTTP http.RoundTripper
}

// HeaderCertRequested is set on every relayed response: ?1 when the site
// asked for the client certificate on that connection (or in the session
// it resumed), ?0 otherwise, and for every http:// response (RFC 8941
// Boolean). The origin's own field and trailers of that name never reach
// the client.
const HeaderCertRequested = "Req-Mtls-Cert-Requested"

// A Proxy is the forward proxy's http.Handler.
type Proxy struct {
	cfg Config

	mu      sync.Mutex
	closing bool // Shutdown was called
	tunnels map[*tunnel]struct{}
	open    sync.WaitGroup // one per tunnel
	full    bool           // a CONNECT was refused at MaxTunnels, and none closed since
}

// A tunnel is a CONNECT tunnel being served: the client's connection,
// hijacked from the proxy's http.Server, which no longer sees it.
type tunnel struct {
	raw net.Conn // nil until hijacked
	// srv serves inside the tunnel once the client's TLS handshake is
	// done; nil before.
	srv *http.Server
}

// New returns the proxy.
func New(cfg Config) *Proxy {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Proxy{cfg: cfg, tunnels: map[*tunnel]struct{}{}}
}

// Shutdown drains the CONNECT tunnels, which the http.Server that serves
// the proxy does not (their connections are hijacked): from then on a
// CONNECT gets a 503; a tunnel still in its TLS handshake is closed, an
// idle one too, and one serving a request is closed once the request is
// done. When ctx ends first, the tunnels left are closed and ctx's error
// returned. Call it alongside http.Server.Shutdown.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	for t := range p.tunnels {
		switch {
		case t.srv != nil:
			go t.srv.Shutdown(ctx)
		case t.raw != nil:
			t.raw.Close() // no request yet
		}
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.open.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	for t := range p.tunnels {
		if t.raw != nil {
			t.raw.Close()
		}
	}
	p.mu.Unlock()
	return ctx.Err()
}

// track registers a tunnel about to be opened; nil and why not when the
// proxy is shutting down or has MaxTunnels open.
func (p *Proxy) track() (*tunnel, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return nil, "shutting down"
	}
	if p.cfg.MaxTunnels > 0 && len(p.tunnels) >= p.cfg.MaxTunnels {
		if !p.full {
			p.full = true
			p.cfg.Log.Warn("tunnel limit reached: CONNECT answered 503", "max_tunnels", p.cfg.MaxTunnels)
		}
		return nil, fmt.Sprintf("too many open tunnels (%d): try again later", p.cfg.MaxTunnels)
	}
	t := &tunnel{}
	p.tunnels[t] = struct{}{}
	p.open.Add(1)
	return t, ""
}

// serving records the server of t once its handshake is done; false when
// the proxy is shutting down (t is closed then).
func (p *Proxy) serving(t *tunnel, srv *http.Server) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	t.srv = srv
	return true
}

func (p *Proxy) untrack(t *tunnel) {
	p.mu.Lock()
	delete(p.tunnels, t)
	p.full = false
	raw := t.raw
	p.mu.Unlock()
	if raw != nil {
		raw.Close()
	}
	p.open.Done()
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.cfg.Auth != nil && !p.authorized(r) {
		w.Header().Set("Proxy-Authenticate", `Basic realm="req-mtls forward proxy"`)
		http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
		return
	}
	up := p.cfg.Near
	far := p.cfg.Destinations != nil && Far(r.Context())
	if far {
		up = p.cfg.Far
	}
	switch {
	case r.Method == http.MethodConnect:
		p.tunnel(w, r, up, far)
	case r.URL.IsAbs() && r.URL.Scheme == "http":
		if far && p.refused(w, r, r.URL.Hostname()) {
			return
		}
		p.relay(w, r, p.reverseProxy("http", r.URL.Host, up.HTTP), "http", r.URL.Host, false)
	default:
		http.Error(w, "this is a forward proxy: send CONNECT host:port for https, or an absolute http:// URL", http.StatusBadRequest)
	}
}

func (p *Proxy) authorized(r *http.Request) bool {
	v := r.Header.Get("Proxy-Authorization")
	scheme, cred, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(b), ":")
	return ok && p.cfg.Auth(user, pass)
}

// tunnel answers CONNECT: it terminates the client's TLS with a leaf for
// the host and serves HTTP/2 or HTTP/1.1 inside, every request relayed to
// the host.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, up Upstream, far bool) {
	// The tunnel's end is the request target (authority-form, RFC 9110,
	// Section 9.3.6), never the Host field: net/http fills r.Host from
	// Host when the request line's target is empty.
	target := r.URL.Host
	host, port, err := net.SplitHostPort(target)
	// The request line holds the authority alone: no user information,
	// which net/http parses apart and would have the tunnel pass over.
	if err != nil || host == "" || port == "" || r.URL.User != nil {
		target = r.RequestURI
		http.Error(w, fmt.Sprintf("CONNECT %q: want host:port", target), http.StatusBadRequest)
		return
	}
	if err := checkTarget(host, port); err != nil {
		p.cfg.Log.Warn("CONNECT refused", "client", r.RemoteAddr, "err", err)
		http.Error(w, "req-mtls forward proxy: CONNECT: "+err.Error(), http.StatusBadRequest)
		return
	}
	if far && p.refused(w, r, host) {
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "CONNECT needs HTTP/1.1 to the proxy", http.StatusHTTPVersionNotSupported)
		return
	}
	t, why := p.track()
	if t == nil {
		w.Header().Set("Connection", "close")
		http.Error(w, "req-mtls forward proxy: "+why, http.StatusServiceUnavailable)
		return
	}
	defer p.untrack(t)
	c, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	p.mu.Lock()
	t.raw = c
	closing := p.closing
	p.mu.Unlock()
	if closing {
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	var raw io.Reader = c
	if brw.Reader.Buffered() > 0 {
		raw = io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), c)
	}
	// The client speaks first: TLS for https, or plain HTTP, which
	// clients send for ws:// and http:// through a tunnel.
	br := bufio.NewReader(raw)
	c.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	first, err := br.Peek(1)
	if err != nil {
		return
	}
	conn := &prefixConn{Conn: c, r: br}
	var (
		inner  net.Conn = conn
		scheme          = "http"
		rt              = up.HTTP
	)
	flagged := false
	// RFC 8446, Section 5.1: a TLS connection opens with a handshake
	// record, ContentType 22.
	if first[0] == 22 {
		flagged, scheme, rt = p.cfg.FlagHost(host), "https", up.Plain
		if flagged {
			rt = up.Flagged
		}
		tc := tls.Server(conn, &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"},
			GetCertificate: func(chi *tls.ClientHelloInfo) (*tls.Certificate, error) {
				// The leaf is for the CONNECT host: the tunnel goes
				// there, whatever name the client sends inside it.
				return p.cfg.CA.Leaf(host)
			},
		})
		if err := tc.Handshake(); err != nil {
			p.cfg.Log.Warn("tunnel: client TLS handshake failed", "target", target, "err", err,
				"hint", "does the client trust the proxy's root?")
			return
		}
		inner = tc
	}
	c.SetDeadline(time.Time{})
	defaultPort := map[string]string{"http": "80", "https": "443"}[scheme]
	rp := p.reverseProxy(scheme, target, rt)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The site gets the request with its Host, signed for it
		// (@authority), and the flags were chosen for the target: a Host
		// that names another authority is not for this tunnel (RFC 9110,
		// Section 15.5.20).
		if r.Host != "" && !sameAuthority(r.Host, host, port, defaultPort) {
			p.cfg.Log.Warn("tunnel: Host is not the CONNECT target", "target", target, "host", r.Host)
			http.Error(w, fmt.Sprintf("req-mtls forward proxy: Host %q is not this tunnel's: the tunnel goes to %s", r.Host, target), http.StatusMisdirectedRequest)
			return
		}
		p.relay(w, r, rp, scheme, target, flagged)
	})
	// net/http serves HTTP/2 on a *tls.Conn that negotiated h2, else
	// HTTP/1.1.
	srv := &http.Server{ReadHeaderTimeout: time.Minute, IdleTimeout: p.cfg.IdleTimeout}
	if !p.serving(t, srv) {
		return
	}
	serveConn(srv, inner, h)
}

// checkTarget checks a CONNECT target's host and port: an IP address (no
// zone) or a DNS name (RFC 1035, Section 2.3.4: at most 253 characters
// without the final dot, labels of 1 to 63; letters, digits and inner
// hyphens, underscores tolerated as resolvers do), and a port from 1 to
// 65535 in decimal.
func checkTarget(host, port string) error {
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] < '0' || port[0] > '9' {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" {
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) > 253 {
		return fmt.Errorf("host %.40q... is longer than 253 characters", host)
	}
	bad := fmt.Errorf("host %q is not a DNS name or an IP address", host)
	if name == "" {
		return bad
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) > 63 {
			return fmt.Errorf("host %q: a label is longer than 63 characters", host)
		}
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return bad
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return bad
			}
		}
	}
	return nil
}

// refused answers 403 and reports true when host is an IP address that
// Destinations refuses; names are checked when they are resolved.
func (p *Proxy) refused(w http.ResponseWriter, r *http.Request, host string) bool {
	err := p.cfg.Destinations.CheckHost(r.Context(), host)
	if err == nil {
		return false
	}
	p.cfg.Log.Warn("destination refused", "method", r.Method, "host", host, "client", r.RemoteAddr, "err", err)
	http.Error(w, "req-mtls forward proxy: "+err.Error(), http.StatusForbidden)
	return true
}

// sameAuthority reports whether authority (a Host field) names host and
// port: the name in any case, with or without a final dot, the port
// given or, when it is the default, left out.
func sameAuthority(authority, host, port, defaultPort string) bool {
	h, p, err := net.SplitHostPort(authority)
	if err != nil {
		h, p = strings.TrimSuffix(strings.TrimPrefix(authority, "["), "]"), defaultPort
	}
	norm := func(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) }
	return norm(h) == norm(host) && p == port
}

// reverseProxy relays requests to target over rt, streaming both ways.
// One serves a whole tunnel.
func (p *Proxy) reverseProxy(scheme, target string, rt http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = scheme, target
			pr.Out.Host = pr.In.Host
			if pr.Out.Host == "" {
				pr.Out.Host = target
			}
			pr.Out.Header.Del("Proxy-Authorization")
			pr.Out.Header.Del("Proxy-Connection")
		},
		Transport: rt,
		// 0: net/http's ReverseProxy flushes event streams and bodies of
		// unknown length at once by itself, and the rest when done.
		FlushInterval: 0,
		BufferPool:    bufpool.Copy,
		ModifyResponse: func(resp *http.Response) error {
			// The field is the proxy's word alone: whatever the origin
			// put there is replaced, and its trailers of that name, sent
			// announced or not, are dropped once the body has brought
			// them. Plain HTTP never asks for a certificate.
			requested := false
			if scheme == "https" {
				requested, _, _ = p.cfg.Asked(target)
			}
			resp.Header.Set(HeaderCertRequested, sfBool(requested))
			delete(resp.Trailer, HeaderCertRequested)
			if resp.StatusCode != http.StatusSwitchingProtocols { // an upgrade's body is the connection
				resp.Body = &trailerFilter{ReadCloser: resp.Body, resp: resp}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status, msg := p.cfg.Explain(err)
			var de *DestinationError
			switch {
			case errors.Is(err, ErrLoop):
				status, msg = http.StatusLoopDetected, ErrLoop.Error()+": check HTTPS_PROXY and HTTP_PROXY (or the proxy chosen for this request)"
			case errors.As(err, &de):
				status, msg = http.StatusForbidden, de.Error()
			}
			if r.Context().Err() != nil {
				return // the client went away
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(status)
			fmt.Fprintf(w, "req-mtls forward proxy: %s %s: %s\n", r.Method, scheme+"://"+target+r.URL.RequestURI(), msg)
		},
		ErrorLog: slog.NewLogLogger(p.cfg.Log.Handler(), slog.LevelWarn),
	}
}

// relay sends r on with rp and logs one line.
func (p *Proxy) relay(w http.ResponseWriter, r *http.Request, rp *httputil.ReverseProxy, scheme, target string, flagged bool) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	rp.ServeHTTP(rec, r)
	attrs := []any{"method", r.Method, "url", scheme + "://" + target + r.URL.RequestURI(), "flags_sent", flagged && scheme == "https"}
	if scheme == "https" {
		requested, sent, known := p.cfg.Asked(target)
		if known {
			attrs = append(attrs, "cert_requested", requested, "cert_sent", sent)
		}
	}
	attrs = append(attrs, "status", rec.status, "bytes", rec.bytes, "duration", time.Since(start))
	p.cfg.Log.Info("request", attrs...)
}

// ErrLoop says that the proxy chosen for a request is this proxy itself:
// sent on, the request would come back here, again and again.
var ErrLoop = errors.New("the proxy chosen for this request is this proxy itself")

// NoLoop wraps a choice of upstream proxy (http.Transport.Proxy's
// meaning) so that it fails with ErrLoop when the proxy it returns is the
// listener the request came in on (http.LocalAddrContextKey): a proxy
// whose HTTPS_PROXY names itself. Names are resolved only when the ports
// match. A proxy reached on one address and named by another (listening
// on 0.0.0.0, HTTPS_PROXY naming the host's external address) is caught
// one hop later, when the request comes in on that address.
func NoLoop(choose func(*http.Request) (*url.URL, error)) func(*http.Request) (*url.URL, error) {
	return func(r *http.Request) (*url.URL, error) {
		u, err := choose(r)
		if err != nil || u == nil {
			return u, err
		}
		if isSelf(r.Context(), u) {
			return nil, ErrLoop
		}
		return u, nil
	}
}

// isSelf reports whether proxy u is the local address of the connection
// ctx's request came in on.
func isSelf(ctx context.Context, u *url.URL) bool {
	la, ok := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	local, err := netip.ParseAddrPort(la.String())
	if err != nil {
		return false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
	}
	if port != fmt.Sprint(local.Port()) {
		return false
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname()); err != nil {
		return false
	}
	for _, ip := range ips {
		ip = ip.Unmap().WithZone("")
		if ip == local.Addr().Unmap().WithZone("") || ip.IsUnspecified() {
			return true
		}
	}
	return false
}

// trailerFilter drops HeaderCertRequested from the response's trailers
// when its body ends, before the ReverseProxy copies them.
type trailerFilter struct {
	io.ReadCloser
	resp *http.Response
}

func (f *trailerFilter) Read(b []byte) (int, error) {
	n, err := f.ReadCloser.Read(b)
	if err != nil {
		f.resp.Trailer.Del(HeaderCertRequested)
		f.resp.Trailer.Del(http.TrailerPrefix + HeaderCertRequested)
	}
	return n, err
}

func sfBool(b bool) string {
	if b {
		return "?1"
	}
	return "?0"
}

// recorder notes the status and body bytes, and lets flushes and hijacks
// through.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// prefixConn reads what was buffered before the connection.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// serveConn serves HTTP/2 or HTTP/1.1 on one connection with srv until
// the connection is closed or hijacked and every handler has returned (a
// hijacked connection is an upgrade that a handler still relays).
func serveConn(srv *http.Server, c net.Conn, h http.Handler) {
	var (
		mu      sync.Mutex
		running int // handlers
		idle    = sync.NewCond(&mu)
	)
	l := &oneConn{c: c, done: make(chan struct{}), closed: make(chan struct{})}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		running++
		mu.Unlock()
		defer func() {
			mu.Lock()
			if running--; running == 0 {
				idle.Broadcast()
			}
			mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed || s == http.StateHijacked {
			l.connDone()
		}
	}
	srv.Serve(l) // returns at once after a Shutdown: the connection may still be in use
	if l.given.Load() {
		<-l.done
	}
	mu.Lock()
	for running > 0 {
		idle.Wait()
	}
	mu.Unlock()
}

// oneConn is a listener that gives one connection, then blocks until it
// is closed.
type oneConn struct {
	c      net.Conn
	once   sync.Once
	given  atomic.Bool   // Accept gave c
	done   chan struct{} // closed when c is closed or hijacked
	closed chan struct{} // closed by Close
	doneMu sync.Once
	shut   sync.Once
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		l.given.Store(true)
		return c, nil
	}
	select {
	case <-l.done:
	case <-l.closed:
	}
	return nil, net.ErrClosed
}

func (l *oneConn) connDone()      { l.doneMu.Do(func() { close(l.done) }) }
func (l *oneConn) Close() error   { l.shut.Do(func() { close(l.closed) }); return nil }
func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }
