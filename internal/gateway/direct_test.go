package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/rawio"
)

// origin is a plain-HTTP test origin that counts its connections.
type origin struct {
	*httptest.Server
	mu           sync.Mutex
	open         int
	total        atomic.Int32
	closeAfterOK atomic.Bool // close each connection once it went idle
	// Connections open at the gateway's end, and the most at once.
	dialed, mostDialed int
}

// trackedConn counts itself out of origin.dialed when closed. It reads
// and writes its socket as the gateway's own connections do (rawio).
type trackedConn struct {
	net.Conn
	tcp  *net.TCPConn
	o    *origin
	once sync.Once
}

// SyscallConn lets the pool peek at the socket (alive).
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	return c.tcp.SyscallConn()
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.o.mu.Lock()
		c.o.dialed--
		c.o.mu.Unlock()
	})
	return c.Conn.Close()
}

func newOrigin(t *testing.T, h http.HandlerFunc) *origin {
	t.Helper()
	o := &origin{}
	o.Server = httptest.NewUnstartedServer(h)
	o.Config.ConnState = func(c net.Conn, s http.ConnState) {
		o.mu.Lock()
		defer o.mu.Unlock()
		switch s {
		case http.StateNew:
			o.open++
			o.total.Add(1)
		case http.StateClosed, http.StateHijacked:
			o.open--
		case http.StateIdle:
			if o.closeAfterOK.Load() {
				c.Close()
			}
		}
	}
	o.Start()
	t.Cleanup(o.Close)
	return o
}

// mostOpen is the most connections open at once at the gateway's end (the
// origin notices a close later).
func (o *origin) mostOpen() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.mostDialed
}

func newTestDirect(t *testing.T, o *origin, maxConns int, header time.Duration) (*direct, *slots) {
	t.Helper()
	addr := o.Listener.Addr().String()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		o.mu.Lock()
		o.dialed++
		o.mostDialed = max(o.mostDialed, o.dialed)
		o.mu.Unlock()
		return &trackedConn{Conn: rawio.Wrap(c), tcp: c.(*net.TCPConn), o: o}, nil
	}
	s := newSlots(maxConns)
	d := newDirect(dial, s, header, time.Minute, transportOn)
	t.Cleanup(d.closeOther)
	t.Cleanup(d.CloseIdle)
	return d, s
}

// transportOn is a plain Transport as the fallback, dialing through dial.
func transportOn(dial dialFunc) http.RoundTripper {
	return &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64}
}

func get(t *testing.T, rt http.RoundTripper, url string) (int, string, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestDirectReusesConnection: requests one after another travel on one
// kept-alive connection; HEAD and 204 answers give it back too.
func TestDirectReusesConnection(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/empty" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		io.WriteString(w, "hello "+r.URL.Path)
	})
	d, _ := newTestDirect(t, o, 4, time.Second)
	for i, path := range []string{"/a", "/empty", "/b", "/c"} {
		status, body, err := get(t, d, o.URL+path)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if path != "/empty" && body != "hello "+path || path == "/empty" && status != http.StatusNoContent {
			t.Fatalf("request %d: %d %q", i, status, body)
		}
	}
	req, _ := http.NewRequest("HEAD", o.URL+"/h", nil)
	resp, err := d.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, _, err := get(t, d, o.URL+"/last"); err != nil {
		t.Fatal(err)
	}
	if n := o.total.Load(); n != 1 {
		t.Errorf("%d connections to the origin, want 1", n)
	}
}

// TestDirectStaleConnection: a kept-alive connection the origin closed
// while idle is met by the next request, which goes again on a new one.
func TestDirectStaleConnection(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	o.closeAfterOK.Store(true)
	d, _ := newTestDirect(t, o, 4, time.Second)
	for i := range 5 {
		if _, body, err := get(t, d, o.URL+"/"); err != nil || body != "ok" {
			t.Fatalf("request %d: %q %v", i, body, err)
		}
		time.Sleep(20 * time.Millisecond) // let the origin's close arrive
	}
	if n := o.total.Load(); n != 5 {
		t.Errorf("%d connections, want 5 (one per request)", n)
	}
}

// TestDirectStaleConnectionTCP: on the gateway's own kind of connection (a
// *net.TCPConn, whose socket the pool peeks at through rawio), a kept-alive
// connection the origin closed while idle is found before a bodiless POST
// goes on it (the POST could not go again).
func TestDirectStaleConnectionTCP(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	o.closeAfterOK.Store(true)
	d := newDirect(dialTo(o.Listener.Addr().String()), newSlots(4), time.Second, time.Minute, transportOn)
	defer d.CloseIdle()
	for i := range 4 {
		req, _ := http.NewRequest("POST", o.URL+"/", nil)
		resp, err := d.RoundTrip(req)
		if err != nil {
			t.Fatalf("POST %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" {
			t.Fatalf("POST %d: %q", i, body)
		}
		time.Sleep(20 * time.Millisecond) // let the origin's close arrive
	}
	if n := o.total.Load(); n != 4 {
		t.Errorf("%d connections, want 4 (one per request)", n)
	}
}

// TestDirectBodyNotRead: a body closed before its end takes its
// connection down with it (what is left of it would be read as the next
// answer); the next request gets a new one.
func TestDirectBodyNotRead(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) })
	d, s := newTestDirect(t, o, 4, time.Second)
	req, _ := http.NewRequest("GET", o.URL+"/", nil)
	resp, err := d.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 100))
	resp.Body.Close()
	if _, body, err := get(t, d, o.URL+"/"); err != nil || body != big {
		t.Fatalf("next request: %d bytes, %v", len(body), err)
	}
	if n := o.total.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n != 1 {
		t.Errorf("%d slots taken with one idle connection, want 1", s.n)
	}
}

// TestDirectCap: at most the cap of connections are open to the origin
// at once, over both ways of sending; requests beyond wait.
func TestDirectCap(t *testing.T) {
	release := make(chan struct{})
	var inside atomic.Int32
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		inside.Add(1)
		io.Copy(io.Discard, r.Body)
		<-release
		io.WriteString(w, "ok")
	})
	d, _ := newTestDirect(t, o, 2, 10*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var req *http.Request
			if i%2 == 0 {
				req, _ = http.NewRequest("GET", o.URL+"/", nil)
			} else {
				req, _ = http.NewRequest("POST", o.URL+"/", strings.NewReader("body"))
			}
			resp, err := d.RoundTrip(req)
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); inside.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // time for a third to get in, if the cap let it
	if n := inside.Load(); n != 2 {
		t.Errorf("%d requests at the origin at once, want 2", n)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if most := o.mostOpen(); most > 2 {
		t.Errorf("%d connections open at once, cap 2", most)
	}
}

// TestDirectTimeoutAndCancel: an origin that does not answer is a timeout
// after the header timeout; a request whose client went away ends at once.
func TestDirectTimeoutAndCancel(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	d, _ := newTestDirect(t, o, 4, 200*time.Millisecond)
	_, _, err := get(t, d, o.URL+"/slow")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("slow origin: %v, want a timeout", err)
	}
	d2, _ := newTestDirect(t, o, 4, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", o.URL+"/slow", nil)
	start := time.Now()
	_, err = d2.RoundTrip(req)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("cancelled request: %v after %v", err, time.Since(start))
	}
}

// TestDirectConnectionClose: an answer with Connection: close is the
// connection's last.
func TestDirectConnectionClose(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	d, _ := newTestDirect(t, o, 4, time.Second)
	for range 3 {
		if _, body, err := get(t, d, o.URL+"/"); err != nil || body != "bye" {
			t.Fatalf("%q %v", body, err)
		}
	}
	if n := o.total.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}

// BenchmarkUpstream: a GET through each way of sending to a local origin.
func BenchmarkUpstream(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "22")
		io.WriteString(w, "hello from the origin\n")
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	d := newDirect(dial, newSlots(0), time.Minute, time.Minute, transportOn)
	defer d.CloseIdle()
	defer d.closeOther()
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{{"transport", tr}, {"direct", d}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("GET", srv.URL+"/", nil)
				resp, err := c.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

// TestDirectKeepsHundredIdle: after a hundred requests at once (h2load's
// ten connections of ten streams), the pool keeps their hundred
// connections, and the next hundred at once travel on them without a dial.
func TestDirectKeepsHundredIdle(t *testing.T) {
	const n = 100
	var mu sync.Mutex
	inside := 0
	release := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inside++
		if inside == n {
			close(release)
		}
		rel := release
		mu.Unlock()
		<-rel // all n at the origin at once
		io.WriteString(w, "ok")
	})
	d, _ := newTestDirect(t, o, 1024, 10*time.Second)
	for wave := range 2 {
		mu.Lock()
		inside, release = 0, make(chan struct{})
		mu.Unlock()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, body, err := get(t, d, o.URL+"/"); err != nil || body != "ok" {
					errs <- fmt.Errorf("%q, %v", body, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("wave %d: %v", wave+1, err)
		}
	}
	if got := o.total.Load(); got != n {
		t.Errorf("%d connections to the origin over two waves of %d requests at once, want %d (the second on the first's)", got, n, n)
	}
}
