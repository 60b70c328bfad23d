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
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/req-mtls/req-mtls/internal/bufpool"
)

// Config configures a Proxy.
type Config struct {
	CA *CA
	// Flagged carries requests to hosts that get the flags and the
	// certificate, Plain the others (and every http:// request).
	Flagged, Plain http.RoundTripper
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
	// Log receives one line per request and the failures.
	Log *slog.Logger
}

// HeaderCertRequested is added to every relayed https response: ?1 when the
// site asked for the client certificate on that connection (or in the
// session it resumed), ?0 otherwise (RFC 8941 Boolean).
const HeaderCertRequested = "Req-Mtls-Cert-Requested"

// A Proxy is the forward proxy's http.Handler.
type Proxy struct {
	cfg Config
}

// New returns the proxy.
func New(cfg Config) *Proxy {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Proxy{cfg: cfg}
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.cfg.Auth != nil && !p.authorized(r) {
		w.Header().Set("Proxy-Authenticate", `Basic realm="req-mtls forward proxy"`)
		http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
		return
	}
	switch {
	case r.Method == http.MethodConnect:
		p.tunnel(w, r)
	case r.URL.IsAbs() && r.URL.Scheme == "http":
		p.relay(w, r, p.reverseProxy("http", r.URL.Host, p.cfg.Plain), "http", r.URL.Host, false)
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

// validPort reports whether port is a TCP port number, 1 to 65535, in
// decimal digits (RFC 3986, Section 3.2.3).
func validPort(port string) bool {
	if port == "" || len(port) > 5 {
		return false
	}
	n := 0
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n >= 1 && n <= 65535
}

// tunnel answers CONNECT: it terminates the client's TLS with a leaf for
// the host and serves HTTP/2 or HTTP/1.1 inside, every request relayed to
// the host.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request) {
	// The tunnel's end is the request target (authority-form, RFC 9110,
	// Section 9.3.6), never the Host field: net/http fills r.Host from
	// Host when the request line's target is empty.
	target := r.URL.Host
	host, port, err := net.SplitHostPort(target)
	if err != nil || host == "" || !validPort(port) {
		http.Error(w, fmt.Sprintf("CONNECT %q: want host:port, port a number from 1 to 65535", target), http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "CONNECT needs HTTP/1.1 to the proxy", http.StatusHTTPVersionNotSupported)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		c.Close()
		return
	}
	var conn net.Conn = c
	if brw.Reader.Buffered() > 0 {
		conn = &prefixConn{Conn: c, r: io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), c)}
	}
	flagged := p.cfg.FlagHost(host)
	rt := p.cfg.Plain
	if flagged {
		rt = p.cfg.Flagged
	}
	tc := tls.Server(conn, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(chi *tls.ClientHelloInfo) (*tls.Certificate, error) {
			// The leaf is for the CONNECT host: the tunnel goes there,
			// whatever name the client sends inside it.
			return p.cfg.CA.Leaf(host)
		},
	})
	tc.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		p.cfg.Log.Warn("tunnel: client TLS handshake failed", "target", target, "err", err,
			"hint", "does the client trust the proxy's root?")
		tc.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	rp := p.reverseProxy("https", target, rt)
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.relay(w, r, rp, "https", target, flagged)
	})
	// net/http serves HTTP/2 on a *tls.Conn that negotiated h2, else
	// HTTP/1.1.
	serveOne(tc, inner)
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
			if scheme == "https" {
				requested, _, _ := p.cfg.Asked(target)
				resp.Header.Set(HeaderCertRequested, sfBool(requested))
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status, msg := p.cfg.Explain(err)
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

// serveOne serves HTTP/2 or HTTP/1.1 on one connection until it closes.
func serveOne(c net.Conn, h http.Handler) {
	l := &oneConn{c: c, done: make(chan struct{})}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Minute, IdleTimeout: 2 * time.Minute,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed || s == http.StateHijacked {
				l.close()
			}
		}}
	srv.Serve(l)
}

// oneConn is a listener that gives one connection, then waits for it to be
// done.
type oneConn struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
	shut sync.Once
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConn) close()         { l.shut.Do(func() { close(l.done) }) }
func (l *oneConn) Close() error   { l.close(); return nil }
func (l *oneConn) Addr() net.Addr { return l.c.LocalAddr() }
