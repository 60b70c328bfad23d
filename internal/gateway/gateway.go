// Package gateway makes the request-mTLS server a TLS terminator in front of
// any origin: a reverse proxy that forwards the client's verified identity
// (RFC 9440's Client-Cert and Client-Cert-Chain, and explicit fields for
// the rest of the handshake's decision), after removing every copy of those
// fields the client sent.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/bufpool"
	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// Config configures a gateway.
type Config struct {
	// Upstream is the origin: http://host:port, https://host:port, or
	// unix:/path/to.sock (HTTP over a Unix socket). A path in it prefixes
	// every request's path.
	Upstream string
	// UpstreamTLS configures TLS toward an https origin: roots
	// (RootCAs), and a client certificate for mTLS to the origin, so
	// that it can trust the identity fields came from the gateway.
	UpstreamTLS *tls.Config
	// XFCC adds Envoy's x-forwarded-client-cert field too, By set to
	// XFCCBy when not empty.
	XFCC   bool
	XFCCBy string
	// MaxRequestBody bounds request bodies (0: 10 MiB; 413 above),
	// MaxResponseBody the bodies of responses (0: none; a larger
	// response is cut off and logged). A negative value is no limit.
	MaxRequestBody  int64
	MaxResponseBody int64
	// MaxUpstreamConns caps the connections open to the origin at once
	// (0: 1024; negative: no cap); requests beyond wait for one.
	MaxUpstreamConns int
	// DialTimeout bounds connecting to the origin (default 5 s),
	// ResponseHeaderTimeout waiting for its response header (default
	// 30 s; 504 after).
	DialTimeout           time.Duration
	ResponseHeaderTimeout time.Duration
	// Logger receives origin failures (default slog.Default()).
	Logger *slog.Logger
	// ConnOf finds a request's connection (server.ConnOf).
	ConnOf func(*http.Request) *auth.Conn
}

// New returns the gateway handler.
func New(cfg Config) (http.Handler, error) {
	target, dial, err := parseUpstream(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	if cfg.MaxRequestBody == 0 {
		cfg.MaxRequestBody = 10 << 20
	}
	if cfg.MaxUpstreamConns == 0 {
		cfg.MaxUpstreamConns = 1024
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	if dial == nil {
		addr := target.Host
		if target.Port() == "" {
			addr = net.JoinHostPort(target.Hostname(), map[string]string{"http": "80", "https": "443"}[target.Scheme])
		}
		dial = func(ctx context.Context, d *net.Dialer) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	// One cap on the connections open to the origin, over both ways
	// of sending (direct.go).
	up := newDirect(func(ctx context.Context) (net.Conn, error) { return dial(ctx, dialer) },
		newSlots(max(cfg.MaxUpstreamConns, 0)), cfg.ResponseHeaderTimeout, 90*time.Second,
		func(counted dialFunc) http.RoundTripper {
			return &http.Transport{
				DialContext:            counted,
				TLSClientConfig:        cfg.UpstreamTLS,
				TLSHandshakeTimeout:    cfg.DialTimeout,
				ResponseHeaderTimeout:  cfg.ResponseHeaderTimeout,
				MaxResponseHeaderBytes: maxHeaderBytes,
				MaxIdleConnsPerHost:    64,
				IdleConnTimeout:        90 * time.Second,
				ForceAttemptHTTP2:      cfg.UpstreamTLS != nil,
			}
		})
	g := &gateway{cfg: cfg, log: cfg.Logger, target: target, direct: up, fast: fastTarget(target)}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { g.rewrite(pr, target) },
		Transport:  timed{up},
		BufferPool: bufpool.Copy,
		// 0: ReverseProxy flushes event streams and bodies of unknown
		// length at once by itself (long polls, server-sent events), and
		// a response of known length once, with one write fewer.
		FlushInterval:  0,
		ErrorHandler:   g.fail,
		ModifyResponse: g.response,
		ErrorLog:       slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return g, nil
}

// parseUpstream returns the URL requests are rewritten to and, for a Unix
// socket, the dial function.
func parseUpstream(s string) (*url.URL, func(context.Context, *net.Dialer) (net.Conn, error), error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		path = strings.TrimPrefix(path, "//")
		if path == "" {
			return nil, nil, fmt.Errorf("upstream %q: no socket path", s)
		}
		dial := func(ctx context.Context, d *net.Dialer) (net.Conn, error) { return d.DialContext(ctx, "unix", path) }
		return &url.URL{Scheme: "http", Host: "localhost"}, dial, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, nil, fmt.Errorf("upstream %q: %v", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, fmt.Errorf("upstream %q: want http://HOST[:PORT], https://HOST[:PORT] or unix:/PATH", s)
	}
	return u, nil, nil
}

type gateway struct {
	cfg    Config
	log    *slog.Logger
	proxy  *httputil.ReverseProxy
	target *url.URL
	direct *direct
	fast   bool // requests that fastRequest takes go the fast way (fast.go)
}

type ctxKey int

const timingKey ctxKey = 0

// Timing is filled in as a request goes through the gateway; the access log
// reads it.
type Timing struct {
	Sent     bool          // a request went to the origin
	Status   int           // the origin's status code, 0 when none came
	Upstream time.Duration // from sending the request to the origin's response header
	Err      string        // why the origin failed, if it did
	// Verdict is the site's rules' verdict on the request, for the
	// access log (the server sets it before the gateway runs).
	Verdict policy.Verdict
}

// TimingOf returns the Timing r carries (WithTiming), or nil.
func TimingOf(r *http.Request) *Timing {
	t, _ := r.Context().Value(timingKey).(*Timing)
	return t
}

// WithTiming returns a request whose context carries t for the gateway to
// fill in.
func WithTiming(r *http.Request, t *Timing) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), timingKey, t))
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.fast && fastRequest(r) {
		g.serveFast(w, r)
		return
	}
	if g.cfg.MaxRequestBody > 0 && r.ContentLength != 0 {
		// (A length of 0 is an empty body, which HTTP/1.1 and HTTP/2
		// servers both hold the client to.)
		r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxRequestBody)
	}
	g.proxy.ServeHTTP(w, r)
}

func (g *gateway) rewrite(pr *httputil.ProxyRequest, target *url.URL) {
	pr.SetURL(target)
	pr.Out.Host = pr.In.Host // the origin sees the name the client asked for
	StripSpoofable(pr.Out.Header)
	if up := pr.Out.Header.Get("Upgrade"); up != "" && !strings.EqualFold(up, "websocket") {
		// WebSocket alone is tunnelled; any other protocol switch
		// (h2c, say) goes to the origin as the plain request it also is.
		pr.Out.Header.Del("Upgrade")
		pr.Out.Header.Del("Connection")
		pr.Out.Header.Del("HTTP2-Settings")
	}
	pr.SetXForwarded()
	g.setOurs(pr.Out.Header, pr.In)
}

// setOurs sets the fields the gateway adds to in's request to the origin:
// Forwarded, the identity fields, and the signature's verdict.
func (g *gateway) setOurs(out http.Header, in *http.Request) {
	host, port, _ := net.SplitHostPort(in.RemoteAddr)
	forwarded := "for=" + forwardedNode(host, port) + ";proto=https"
	if in.Host != "" {
		forwarded += ";host=" + quoteForwarded(in.Host)
	}
	out["Forwarded"] = []string{forwarded}
	id := Identity{}
	c := g.cfg.ConnOf(in)
	if c != nil && c.Decision() != nil {
		// The identity fields come from the handshake's decision, which
		// never changes: encoded once per connection (the leaf's
		// base64 and hash are most of their cost), copied per request.
		id.Flags, id.Decision = c.Flags().Flags(), c.Decision()
		fields := c.Memo(g, func() any {
			h := http.Header{}
			id.Set(h, g.cfg.XFCC, g.cfg.XFCCBy)
			return h
		}).(http.Header)
		for k, v := range fields {
			out[k] = v
		}
	} else {
		if c != nil {
			id.Flags = c.Flags().Flags()
		}
		id.Set(out, g.cfg.XFCC, g.cfg.XFCCBy)
	}
	res, ok := webbotauth.ResultOf(in)
	if ok {
		// The verdict the server made on this request (one per
		// request, webbotauth.WithResult).
		SetWebBotAuth(out, res, id.Decision)
	}
	var bi string
	if res.Status != "valid" && c != nil && id.Decision != nil {
		// The certificate alone: the same on every request of the
		// connection.
		bi = c.Memo(botIdentityKey{}, func() any { return BotIdentity(id.Decision, res) }).(string)
	} else {
		bi = BotIdentity(id.Decision, res)
	}
	if bi != "" {
		out[HeaderBotIdentity] = []string{bi}
	}
}

// botIdentityKey keys a connection's Bot-Identity in auth.Conn.Memo.
type botIdentityKey struct{}

// timed measures the origin's time to its response header for the access
// log.
type timed struct{ http.RoundTripper }

func (t timed) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.RoundTripper.RoundTrip(r)
	noteTiming(r.Context(), start, resp, err)
	return resp, err
}

// noteTiming fills in the request's Timing, if it has one, for a round
// trip to the origin begun at start.
func noteTiming(ctx context.Context, start time.Time, resp *http.Response, err error) {
	if tm, ok := ctx.Value(timingKey).(*Timing); ok {
		tm.Sent, tm.Upstream = true, time.Since(start)
		if err == nil {
			tm.Status = resp.StatusCode
		}
	}
}

// forwardedNode formats a node of RFC 7239's Forwarded: an IPv6 address in
// brackets, with the port, quoted.
func forwardedNode(host, port string) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		return `"` + host + ":" + port + `"`
	}
	return quoteForwarded(host)
}

func quoteForwarded(v string) string {
	return `"` + quoteEscaper.Replace(v) + `"`
}

// quoteEscaper escapes a quoted-string's backslashes and quotes (RFC 9110,
// Section 5.6.4; RFC 8941, Section 3.3.3): made once, for every request.
var quoteEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

func (g *gateway) response(resp *http.Response) error {
	if max := g.cfg.MaxResponseBody; max > 0 && resp.StatusCode != http.StatusSwitchingProtocols {
		// (A 101's body is the tunnel itself, which the proxy must
		// be able to write to: it is not bounded.)
		if resp.ContentLength > max {
			return fmt.Errorf("%w: %d bytes announced, at most %d allowed", errResponseTooLarge, resp.ContentLength, max)
		}
		resp.Body = &limitedBody{ReadCloser: resp.Body, left: max, log: g.log, url: resp.Request.URL.String()}
	}
	return nil
}

var errResponseTooLarge = errors.New("origin response too large")

// limitedBody cuts a response body off after its limit.
type limitedBody struct {
	io.ReadCloser
	left int64
	log  *slog.Logger
	url  string
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// At the limit: a body of exactly that size ends here, which
		// only one more read can tell.
		var one [1]byte
		n, err := b.ReadCloser.Read(one[:])
		for n == 0 && err == nil {
			n, err = b.ReadCloser.Read(one[:])
		}
		if n == 0 {
			return 0, err
		}
		b.log.Warn("origin response cut off at the size limit", "url", b.url)
		return 0, errResponseTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// fail answers a request the origin could not: 413 for a request body over
// the limit, 504 when the origin was too slow, 502 otherwise; the reason is
// logged.
func (g *gateway) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		status = 499
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		status = http.StatusGatewayTimeout
	}
	if t, ok := r.Context().Value(timingKey).(*Timing); ok {
		t.Err = err.Error()
	}
	if status != 499 {
		g.log.Warn("origin request failed", "status", status, "method", r.Method, "path", r.URL.Path, "err", err)
		http.Error(w, http.StatusText(status), status)
	}
}
