package client

// Tests of the Transport's own state.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/testutil"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

type testSrv struct {
	url, addr string
	mu        sync.Mutex
	addrs     map[string]bool // client addresses seen: one per connection
}

// testServer serves over TLS with request mTLS (internal/auth), counting
// connections; /slow?ms=N answers after N ms.
func testServer(t *testing.T, p *testpki.PKI) *testSrv {
	t.Helper()
	s := &testSrv{addrs: map[string]bool{}}
	s.addr = testutil.ServeRequestMTLS(t, p, testpki.Clock, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.addrs[r.RemoteAddr] = true
		s.mu.Unlock()
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintf(w, "%s ok", r.Proto)
	}))
	s.url = "https://" + s.addr
	return s
}

func flaggedTransport(t *testing.T, p *testpki.PKI) *Transport {
	t.Helper()
	tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, Flags: tlsflags.Must(tlsflags.RequestMTLS), CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1], RootCAs: rootPool(p)}})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func do(c *http.Client, u string) (string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Concurrent first requests to one host: how many connections?
func TestDialCoalesced(t *testing.T) {
	p := testpki.New(t)
	s := testServer(t, p)
	tr := flaggedTransport(t, p)
	c := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(c, fmt.Sprintf("%s/slow?ms=50&id=S%d", s.url, i))
		}()
	}
	wg.Wait()
	s.mu.Lock()
	n := len(s.addrs)
	s.mu.Unlock()
	tr.mu.Lock()
	pooled := 0
	for _, pool := range tr.h2pool {
		pooled += len(pool)
	}
	tr.mu.Unlock()
	if n != 1 || pooled != 1 {
		t.Errorf("20 concurrent requests to one HTTP/2 host used %d TCP connections; %d stay pooled; want 1 and 1", n, pooled)
	}
}

// TestTransportForgetsClosedConnections: a crawl of many distinct hosts
// leaves no per-host state once their connections are closed, and the live
// heap comes back to where it was. REQ_MTLS_HOSTS sets how many (default
// 2000; the README's figure is for 100000).
func TestTransportForgetsClosedConnections(t *testing.T) {
	n := 2000
	if v := os.Getenv("REQ_MTLS_HOSTS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	p := testpki.New(t)
	addr := testServer(t, p).addr
	_, port, _ := net.SplitHostPort(addr)
	resolve := make(map[string]string, n+1)
	for i := range n + 1 {
		resolve[net.JoinHostPort(fmt.Sprintf("h%d.crawl.test", i), port)] = addr
	}
	idle := 200 * time.Millisecond
	tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, Flags: tlsflags.Must(tlsflags.RequestMTLS), CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1],
		RootCAs: rootPool(p), ServerName: "localhost", Resolve: resolve, IdleTimeout: idle}})
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr}
	fetch := func(i int) {
		if body, err := do(c, fmt.Sprintf("https://h%d.crawl.test:%s/", i, port)); err != nil || body != "HTTP/2.0 ok" {
			t.Fatalf("host %d: %q, %v", i, body, err)
		}
	}
	pooled := func() int {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.h2pool)
	}
	settle := func() uint64 {
		for deadline := time.Now().Add(20 * time.Second); pooled() > 0 && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(2 * idle) // timers of closed connections run out
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	fetch(n) // warm: the session cache, the certificate, the pools' maps
	base := settle()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fetch(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	after := settle()
	grown := int64(after) - int64(base)
	t.Logf("%d hosts: live heap %.1f MB before, %.1f MB after (%+.1f MB); %d pool entries left", n, float64(base)/1e6, float64(after)/1e6, float64(grown)/1e6, pooled())
	if left := pooled(); left != 0 {
		t.Errorf("%d pool entries left for closed connections", left)
	}
	if grown > 10<<20 {
		t.Errorf("live heap grew by %.1f MB over %d hosts, want at most 10 MB", float64(grown)/1e6, n)
	}
}

// TestHTTP1HostReservesNoStream: once a host is served over HTTP/1.1, a
// request to it takes no stream of an HTTP/2 connection still pooled for
// it (a reservation nothing would use, which would keep that connection
// from ever being idle).
func TestHTTP1HostReservesNoStream(t *testing.T) {
	p := testpki.New(t)
	s := testServer(t, p)
	tr := flaggedTransport(t, p)
	c := &http.Client{Transport: tr}
	if body, err := do(c, s.url+"/"); err != nil || body != "HTTP/2.0 ok" {
		t.Fatalf("first request: %q, %v", body, err)
	}
	tr.mu.Lock()
	tr.h1only[s.addr] = true // as after a later dial that chose HTTP/1.1
	pooled := tr.h2pool[s.addr]
	tr.mu.Unlock()
	if len(pooled) != 1 {
		t.Fatalf("%d HTTP/2 connections pooled, want 1", len(pooled))
	}
	// The HTTP/1.1 dial finds the server choosing HTTP/2 and the request
	// goes there after all; what matters is what it reserved on the way.
	if body, err := do(c, s.url+"/"); err != nil || !strings.HasSuffix(body, " ok") {
		t.Fatalf("request to the HTTP/1.1 host: %q, %v", body, err)
	}
	if st := pooled[0].State(); st.StreamsReserved != 0 {
		t.Errorf("the pooled HTTP/2 connection has %d streams reserved, want 0", st.StreamsReserved)
	}
}

// TestMaxConnsDialAfterCheck: under MaxConnsPerHost 1, a request that
// found no connection, and goes to dial only after another request's dial
// has pooled one, uses that one instead of dialing a second.
func TestMaxConnsDialAfterCheck(t *testing.T) {
	p := testpki.New(t)
	s := testServer(t, p)
	tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p)}, MaxConnsPerHost: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	// The first request to find no connection dials once the second has
	// found none too; the second dials once the first's connection is
	// pooled.
	secondChecked := make(chan struct{})
	var mu sync.Mutex
	n := 0
	testHookBeforeDial = func() {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		switch k {
		case 1:
			<-secondChecked
		case 2:
			close(secondChecked)
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				tr.mu.Lock()
				pooled := len(tr.h2pool[s.addr])
				tr.mu.Unlock()
				if pooled > 0 {
					return
				}
			}
			t.Error("no connection was pooled in 10 s")
		}
	}
	defer func() { testHookBeforeDial = nil }()
	errs := make(chan error, 2)
	for _, id := range []string{"A", "B"} {
		go func() {
			_, err := do(c, s.url+"/?id="+id)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.addrs) != 1 {
		t.Errorf("2 requests with MaxConnsPerHost 1: %d connections", len(s.addrs))
	}
}

// h1Srv serves HTTP/1.1 alone over TLS and counts the connections open on
// its side. With gated, each handshake waits, once its ClientHello is in,
// for a value on release, and says so on hello.
type h1Srv struct {
	url, addr      string
	open           atomic.Int64
	hello, release chan struct{}
}

func h1Server(t *testing.T, p *testpki.PKI, gated bool) *h1Srv {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h1Srv{url: "https://" + ln.Addr().String(), addr: ln.Addr().String(), hello: make(chan struct{}), release: make(chan struct{})}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}, Time: testpki.Clock}
	if gated {
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s.hello <- struct{}{}
			<-s.release
			return nil, nil
		}
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s ok", r.Proto) }),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.open.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.open.Add(-1)
			}
		},
	}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Close() })
	return s
}

// waitFor polls cond until it holds or 10 s pass, and reports whether it
// held.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestCanceledFirstRequestH1Closed: the first request to each of 50
// HTTP/1.1-only hosts is canceled while its (shared) dial is under way. The
// dial completes and its connection waits for the HTTP/1.1 pool; none is
// left open once the idle timeout has passed.
func TestCanceledFirstRequestH1Closed(t *testing.T) {
	const hosts = 50
	p := testpki.New(t)
	s := h1Server(t, p, true)
	_, port, _ := net.SplitHostPort(s.addr)
	resolve := map[string]string{}
	for i := range hosts {
		resolve[net.JoinHostPort(fmt.Sprintf("h%d.h1.test", i), port)] = s.addr
	}
	tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p), ServerName: "localhost",
		Resolve: resolve, IdleTimeout: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range hosts {
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("https://h%d.h1.test:%s/", i, port), nil)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := tr.RoundTrip(req)
			errc <- err
		}()
		<-s.hello
		cancel()
		if err := <-errc; err == nil {
			t.Fatalf("host %d: the canceled request succeeded", i)
		}
		s.release <- struct{}{}
	}
	if !waitFor(func() bool { return s.open.Load() == 0 }) {
		t.Errorf("%d of %d connections of canceled first requests still open on the server 10 s after the idle timeout", s.open.Load(), hosts)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if n := len(tr.handed); n != 0 {
		t.Errorf("%d connections still wait for an HTTP/1.1 pool", n)
	}
}

// TestMaxConnsWaitersBlock: under MaxConnsPerHost 1, to a server allowing
// one stream at a time, requests that find the stream taken wait for it
// without coming round again while nothing changes (they used to look
// every 5 ms), one canceled while it waits fails as a request and not as
// a dial, and the others are served on the one connection.
func TestMaxConnsWaitersBlock(t *testing.T) {
	const waiters = 10
	p := testpki.New(t)
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	var conns atomic.Int64
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				close(held)
				<-release
			}
			fmt.Fprint(w, "ok")
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				conns.Add(1)
			}
		},
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1},
	}
	go srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, Time: testpki.Clock}))
	defer srv.Close()
	url := "https://" + ln.Addr().String()

	var attempts atomic.Int64
	testHookAttempt = func() { attempts.Add(1) }
	defer func() { testHookAttempt = nil }()
	tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p)}, MaxConnsPerHost: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	first := make(chan error, 1)
	go func() {
		_, err := do(c, url+"/hold")
		first <- err
	}()
	<-held
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	canceled := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", url+"/", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		canceled <- err
	}()
	var wg sync.WaitGroup
	for range waiters - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := do(c, url+"/"); err != nil || got != "ok" {
				t.Errorf("a waiter: %q, %v", got, err)
			}
		}()
	}
	// Every request has made its first attempt; while the stream stays
	// taken nothing changes, and a waiter that blocks makes no other.
	if !waitFor(func() bool { return attempts.Load() >= waiters+1 }) {
		t.Fatalf("%d attempts, want at least %d", attempts.Load(), waiters+1)
	}
	before := attempts.Load()
	time.Sleep(100 * time.Millisecond)
	if extra := attempts.Load() - before; extra != 0 {
		t.Errorf("%d waiters made %d attempts more in 100 ms while the stream stayed taken, want 0", waiters, extra)
	}
	cancel()
	if err := <-canceled; !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "dial") {
		t.Errorf("a waiter canceled while it waited for a stream: %v; want a request error, not a dial error", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("the request holding the stream: %v", err)
	}
	wg.Wait()
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestH1PoolsPerProxyFreed: requests to an HTTP/1.1 host through 50 proxy
// URLs (one set of credentials each, as rotating sessions use) make 50
// HTTP/1.1 pools; each is dropped with its last connection, closed idle,
// and a URL used again gets a pool anew.
func TestH1PoolsPerProxyFreed(t *testing.T) {
	const urls = 50
	p := testpki.New(t)
	site, states := plainServer(t, p, tls.NoClientCert, true)
	stop, drained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		for { // what plainServer reports, unread here
			select {
			case <-states:
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-drained }()
	_, proxyURL := testutil.StartConnectProxy(t, nil)
	var n atomic.Int64
	tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p), IdleTimeout: 100 * time.Millisecond,
		Proxy: func(*http.Request) (*url.URL, error) {
			u := *proxyURL
			u.User = url.UserPassword(fmt.Sprintf("session-%d", n.Add(1)%urls), "x")
			return &u, nil
		}}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	pools := func() int {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return len(tr.h1s)
	}
	for range 2 * urls {
		if got, err := do(c, site); err != nil || got != "HTTP/1.1 certs=0" {
			t.Fatalf("GET %s: %q, %v", site, got, err)
		}
	}
	if !waitFor(func() bool { return pools() == 0 }) {
		t.Errorf("%d HTTP/1.1 pools left once their connections closed idle, want 0", pools())
	}
	if got, err := do(c, site); err != nil || got != "HTTP/1.1 certs=0" || pools() != 1 {
		t.Errorf("GET %s again: %q, %v, %d pools", site, got, err, pools())
	}
}
