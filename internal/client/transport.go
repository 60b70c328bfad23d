//lint:file-ignore SA1019 x/net/http2 is the HTTP/2 client that takes an established uTLS connection; net/http's replacement (Transport.NewClientConn) dials for itself.

package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/idna"
)

// A Transport is an http.RoundTripper that speaks request mTLS: the flags
// in every ClientHello, the certificate when a server asks, sessions
// resumed per host, HTTP/2 where the server offers it and HTTP/1.1
// otherwise (both kept alive, and shared between requests; concurrent
// requests to a new host share one dial). Plain http URLs go through
// net/http's own transport. Over HTTP/1.1, responses have no TLS state
// (resp.TLS is nil). It is safe for concurrent use.
//
// The Transport owns the pools (HTTP/2 connections, the HTTP/1.1 pools and
// which hosts chose HTTP/1.1); the Client under it owns dialing, proxies
// and the explanation of failures. reqmtls.Transport is this Transport
// with the public package's config and errors.
type Transport struct {
	c      *Client
	onHS   func(string, *Handshake)
	h2     *http2.Transport
	h1base http.Transport  // the settings of the HTTP/1.1 pools
	up     *Client         // the dialer for protocol upgrades: ALPN http/1.1 alone
	plain  *http.Transport // http URLs

	maxConns int           // TransportConfig.MaxConnsPerHost, for HTTP/2
	idle     time.Duration // Config.IdleTimeout

	mu      sync.Mutex
	h2pool  map[string][]*h2Conn
	dialing map[string]*dialCall // dials in progress, by address
	h1only  map[string]bool      // hosts that chose HTTP/1.1
	handed  map[string]net.Conn  // a dialed HTTP/1.1 connection for h1's next dial
	// h1s are the HTTP/1.1 pools, by proxy ("" for none) and by whether
	// they are for upgrades: net/http pools by address alone, and a
	// connection through one proxy must never serve a request meant for
	// another, or for none. Each is dropped with its last use.
	h1s map[string]*h1Pool
}

// An h2Conn is a pooled HTTP/2 connection and the TLS connection under it,
// which knows the alert that ended it, if one did.
type h2Conn struct {
	*http2.ClientConn
	tc     *AlertConn
	opened atomic.Bool // a request has taken its first stream (awaitSettings)
	// given counts, under MaxConnsPerHost, the requests given this
	// connection whose RoundTrip has not returned (see hasRoom).
	given atomic.Int32
}

// dialCall is one dial to an address that concurrent requests wait for.
type dialCall struct {
	done chan struct{}
	cc   *h2Conn // nil when the server chose HTTP/1.1 or the dial failed
	err  error
}

// maxH1Hosts bounds the memory of which hosts chose HTTP/1.1.
const maxH1Hosts = 10000

// TransportConfig configures a Transport: the Config of its connections,
// and its pools.
type TransportConfig struct {
	Config
	// OnHandshake, if set, is called after every handshake the Transport
	// makes, with the server's address.
	OnHandshake func(addr string, h *Handshake)
	// MaxConnsPerHost, MaxIdleConns and MaxIdleConnsPerHost have the
	// meaning of http.Transport's (MaxIdleConnsPerHost 0: 8).
	MaxConnsPerHost, MaxIdleConns, MaxIdleConnsPerHost int
}

// NewTransport checks cfg and loads the client certificate, if any.
// Config.IdleTimeout defaults to 90 s here.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	c, err := New(cfg.Config)
	if err != nil {
		return nil, err
	}
	t := &Transport{c: c, onHS: cfg.OnHandshake,
		h2pool:  map[string][]*h2Conn{},
		dialing: map[string]*dialCall{}, h1only: map[string]bool{}, handed: map[string]net.Conn{}}
	// Health checks ping a connection that read nothing for 30 s (or the
	// IdleTimeout, if shorter). x/net/http2 keeps a closed connection's
	// ClientConn (about 13 KB once hookedConn let go of its TLS state)
	// reachable from that timer until it fires.
	// Under MaxConnsPerHost, a request that finds every stream taken
	// waits inside HTTP/2 for one to be free (StrictMaxConcurrentStreams);
	// which connection has room is then the Transport's to say
	// (idleH2Locked).
	t.h2 = &http2.Transport{IdleConnTimeout: cfg.IdleTimeout, ReadIdleTimeout: min(30*time.Second, cfg.IdleTimeout), PingTimeout: 15 * time.Second,
		StrictMaxConcurrentStreams: cfg.MaxConnsPerHost > 0}
	t.maxConns, t.idle = cfg.MaxConnsPerHost, cfg.IdleTimeout
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
	t.h1s = map[string]*h1Pool{}
	// Protocol upgrades (WebSocket): HTTP/1.1 alone, a connection each.
	icfg := cfg.Config
	icfg.HTTP1Only = true
	if t.up, err = New(icfg); err != nil {
		return nil, err
	}
	// Plain http URLs: net/http's own transport, through the proxy
	// RoundTrip chose, connecting within the Timeout.
	t.plain = &http.Transport{
		Proxy: func(req *http.Request) (*url.URL, error) {
			p, _ := req.Context().Value(plainProxy{}).(*url.URL)
			return p, nil
		},
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			// net/http dials under the context of the request that
			// asked, with its values: its proxy is this connection's.
			p, _ := ctx.Value(plainProxy{}).(*url.URL)
			return t.c.DialPlain(ctx, addr, p)
		},
		// An https proxy is verified as servers are, within the Timeout.
		TLSClientConfig:     &tls.Config{RootCAs: cfg.RootCAs, Time: cfg.Time, InsecureSkipVerify: cfg.InsecureSkipVerify},
		TLSHandshakeTimeout: t.c.cfg.Timeout,
		MaxIdleConns:        cfg.MaxIdleConns, MaxIdleConnsPerHost: idlePerHost,
		MaxConnsPerHost: cfg.MaxConnsPerHost, IdleConnTimeout: cfg.IdleTimeout}
	return t, nil
}

// plainProxy is the key of the proxy RoundTrip chose for a plain http
// request, in the request's context.
type plainProxy struct{}

// errPoolFull says a dial was not made: the pool already holds
// MaxConnsPerHost connections that take requests.
var errPoolFull = errors.New("client: MaxConnsPerHost connections are pooled")

// testHookAttempt, when set by a test, runs at each attempt of a request
// to find a connection.
var testHookAttempt func()

// testHookBeforeDial, when set by a test, runs between a request's finding
// no connection to take and its dial.
var testHookBeforeDial func()

// errH2 says a connection meant for HTTP/1.1 negotiated HTTP/2.
var errH2 = errors.New("client: the server chose HTTP/2 on a connection for HTTP/1.1")

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
	req, err := t.c.Sign(req)
	if err != nil {
		return nil, err
	}
	proxy, err := t.c.ProxyForRequest(req)
	if err != nil {
		return nil, err
	}
	if req.URL.Scheme != "https" {
		resp, err := t.plain.RoundTrip(req.WithContext(context.WithValue(req.Context(), plainProxy{}, proxy)))
		var e *Error
		if errors.As(err, &e) {
			return nil, e // a failure to connect, explained
		}
		return resp, err
	}
	addr := hostPort(req.URL)
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
		h := t.h1For(proxy, true)
		resp, err := h.RoundTrip(req)
		t.h1Done(h)
		if err != nil {
			return nil, t.c.Explain(err, "request")
		}
		return resp, nil
	}
	for attempt := 0; ; attempt++ {
		if testHookAttempt != nil {
			testHookAttempt()
		}
		t.mu.Lock()
		h1 := t.h1only[key]
		var cc *h2Conn
		var stale []*h2Conn
		if !h1 {
			// A host gone to HTTP/1.1 takes no stream of a connection
			// still pooled for it: a reservation would be kept forever.
			cc, stale = t.idleH2Locked(key)
			if cc == nil && t.maxConns > 0 && t.usableLocked(key) >= t.maxConns {
				// MaxConnsPerHost: the request queues for a stream on
				// a connection we have, not for a new one. HTTP/2 holds
				// it until a stream is free (StrictMaxConcurrentStreams).
				cc = t.queueH2Locked(key)
			}
		}
		t.mu.Unlock()
		for _, c := range stale {
			c.Close()
		}
		if h1 {
			h := t.h1For(proxy, false)
			resp, err := h.RoundTrip(req)
			t.h1Done(h)
			if errors.Is(err, errH2) && attempt == 0 {
				continue // the host moved to HTTP/2: dial again
			}
			if err != nil {
				return nil, t.c.Explain(err, "request")
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
			if t.maxConns > 0 {
				cc.given.Add(1)
			}
		}
		if t.maxConns > 0 && !cc.opened.CompareAndSwap(false, true) {
			awaitSettings(req.Context(), cc)
		}
		resp, err := cc.RoundTrip(req)
		if t.maxConns > 0 {
			cc.given.Add(-1)
		}
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
// other request takes the stream; RoundTrip uses the reservation; under
// MaxConnsPerHost, counted as given the request instead, see hasRoom), and the
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
			if st.StreamsActive == 0 && st.StreamsReserved == 0 && cc.given.Load() == 0 {
				stale = append(stale, cc)
				continue
			}
			kept = append(kept, cc)
			continue
		}
		kept = append(kept, cc)
		if found != nil {
			continue
		}
		if t.maxConns == 0 && cc.ReserveNewRequest() {
			found = cc
		} else if t.maxConns > 0 && hasRoom(st, cc) {
			cc.given.Add(1)
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

// hasRoom reports whether cc, of a Transport with MaxConnsPerHost, has a
// stream free for one more request. Its HTTP/2 then holds a request until
// a stream is free (StrictMaxConcurrentStreams), and reserves none: it
// counts reservations as streams taken while a request waits, so that
// those of requests queued behind the one waiting (for the lock HTTP/2
// takes for new streams) would keep it waiting for ever. The load counted
// is HTTP/2's streams and waiting requests, and the requests given cc that
// have not started or returned: a request counts twice while its stream
// is open and its response not in, which errs towards a new connection,
// within MaxConnsPerHost. Before the server's SETTINGS its limit is not
// known: a connection takes a request only when it carries none.
func hasRoom(st http2.ClientConnState, cc *h2Conn) bool {
	load := st.StreamsActive + st.StreamsPending + int(cc.given.Load())
	if st.MaxConcurrentStreams == 0 {
		return load == 0
	}
	return load < int(st.MaxConcurrentStreams)
}

// queueH2Locked returns, for a request that found no stream free under
// MaxConnsPerHost, the pooled connection to addr with the fewest requests,
// running and waiting; HTTP/2 holds the request until a stream is free. It
// returns nil when no connection takes new requests.
func (t *Transport) queueH2Locked(addr string) *h2Conn {
	var best *h2Conn
	load := 0
	for _, cc := range t.h2pool[addr] {
		st := cc.State()
		if st.Closed || st.Closing {
			continue
		}
		if n := st.StreamsActive + st.StreamsPending + int(cc.given.Load()); best == nil || n < load {
			best, load = cc, n
		}
	}
	if best != nil {
		best.given.Add(1)
	}
	return best
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
	tc, hs, err := t.c.DialTLS(ctx, addr, host, proxy)
	if err != nil {
		return nil, err
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
		// The request that dialed may be gone (canceled while the dial,
		// which is no caller's own, ran on): a connection no HTTP/1.1
		// pool takes within the idle timeout is closed, as that pool
		// would close it idle.
		time.AfterFunc(t.idle, func() {
			t.mu.Lock()
			left := t.handed[key] == net.Conn(tc)
			if left {
				delete(t.handed, key)
			}
			t.mu.Unlock()
			if left {
				tc.Close()
			}
		})
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
		return nil, err
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
	tc      atomic.Pointer[AlertConn]
	local   net.Addr
	remote  net.Addr
	state   tls.ConnectionState
	once    sync.Once
	onClose func()
	cc      *h2Conn // guarded by the Transport's mu
}

func newHookedConn(tc *AlertConn) *hookedConn {
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

// An h1Pool is one of the Transport's HTTP/1.1 pools. It is dropped
// from the Transport's map when nothing uses it: refs counts the requests
// given it whose RoundTrip has not returned, its dials under way and its
// open connections, so that a crawl through many proxy URLs (rotating
// credentials, one per session) keeps only the pools it still uses.
type h1Pool struct {
	*http.Transport
	name string
	refs int // guarded by the Transport's mu
}

// h1For returns the HTTP/1.1 pool for connections through proxy (nil for
// direct ones), for upgrades or for ordinary requests, counting a use of
// it that the caller ends with h1Done.
func (t *Transport) h1For(proxy *url.URL, upgrade bool) *h1Pool {
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
		h.refs++
		return h
	}
	h := &h1Pool{Transport: t.h1base.Clone(), name: name, refs: 1}
	h.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	dial := func(ctx context.Context, addr string) (net.Conn, error) { return t.dialH1(ctx, addr, proxy) }
	if upgrade {
		// A connection each: its 101 response body is the tunnel.
		h.DisableKeepAlives = true
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return t.dialVia(ctx, t.up, addr, proxy) }
	}
	h.DialTLSContext = func(ctx context.Context, _, addr string) (net.Conn, error) {
		t.mu.Lock()
		h.refs++
		t.mu.Unlock()
		c, err := dial(ctx, addr)
		if err != nil {
			t.h1Done(h)
			return nil, err
		}
		return &poolConn{Conn: c, done: func() { t.h1Done(h) }}, nil
	}
	t.h1s[name] = h
	return h
}

// h1Done ends a use of h (a RoundTrip, a dial, a connection), and drops h
// when it was the last.
func (t *Transport) h1Done(h *h1Pool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h.refs--
	if h.refs == 0 && t.h1s[h.name] == h {
		delete(t.h1s, h.name)
	}
}

// poolConn is a connection of an HTTP/1.1 pool, which calls done when
// first closed.
type poolConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *poolConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
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
	tc, err := t.dialVia(ctx, t.c, addr, proxy)
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
func (t *Transport) dialVia(ctx context.Context, c *Client, addr string, proxy *url.URL) (*AlertConn, error) {
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

func (t *Transport) handshake(addr string, hs *Handshake) {
	if t.onHS != nil {
		t.onHS(addr, hs)
	}
}

// explainH2 names the TLS alert behind an HTTP/2 failure, if there was one,
// without disturbing a connection that still serves other requests.
func (t *Transport) explainH2(cc *h2Conn, err error) error {
	err = cc.tc.AlertOr(err, cc.ClientConn)
	return t.c.Explain(err, "request")
}

// CloseIdleConnections closes connections that carry no request.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	h1s := make([]*h1Pool, 0, len(t.h1s))
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
			if st := cc.State(); st.StreamsActive == 0 && st.StreamsReserved == 0 && cc.given.Load() == 0 {
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
