package gateway

// Defects a review found in the direct path, each a test that failed
// before its fix.

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
)

// Close on an unfinished chunked body drains it (http.body.Close): an endless
// stream never lets Close return.
func TestDirectCloseDoesNotDrain(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		for r.Context().Err() == nil {
			io.WriteString(w, "data: x\n\n")
			w.(http.Flusher).Flush()
			time.Sleep(time.Millisecond)
		}
	})
	d, _ := newTestDirect(t, o, 4, time.Second)
	req, _ := http.NewRequest("GET", o.URL+"/", nil)
	resp, err := d.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 10))
	done := make(chan struct{})
	go func() { resp.Body.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Error("Body.Close still draining the origin's stream after 2 s")
		o.CloseClientConnections()
		<-done
	}
}

// Same through the gateway with MaxResponseBody: the handler never returns.
func TestDirectResponseLimitEndsStream(t *testing.T) {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for r.Context().Err() == nil {
			io.WriteString(w, strings.Repeat("x", 1024))
			w.(http.Flusher).Flush()
			time.Sleep(time.Millisecond)
		}
	}))
	defer o.Close()
	h, err := New(Config{Upstream: o.URL, MaxResponseBody: 4096, ConnOf: func(*http.Request) *auth.Conn { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { recover() }()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Error("gateway handler still running 3 s after the body hit MaxResponseBody")
		o.CloseClientConnections()
		<-done
	}
}

// A 101 on a plain request releases its slot twice.
func TestDirectUnexpected101OneRelease(t *testing.T) {
	addr := rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		http.ReadRequest(br)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n")
		time.Sleep(100 * time.Millisecond)
		c.Close()
	})
	s := newSlots(2)
	d := newDirect(dialTo(addr), s, time.Second, time.Minute, transportOn)
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	if _, err := d.RoundTrip(req); err == nil {
		t.Fatal("no error")
	}
	if s.n != 0 {
		t.Errorf("slots taken after the request: %d, want 0 (cap silently raised)", s.n)
	}
}

// A header timeout on a reused connection is retried: the origin gets the
// request twice and the client waits twice the timeout.
func TestDirectTimeoutNotRetried(t *testing.T) {
	var hits atomic.Int32
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			hits.Add(1)
			time.Sleep(600 * time.Millisecond)
		}
		io.WriteString(w, "ok")
	})
	d, _ := newTestDirect(t, o, 4, 200*time.Millisecond)
	get(t, d, o.URL+"/warm") // leaves an idle connection
	start := time.Now()
	_, _, err := get(t, d, o.URL+"/slow")
	time.Sleep(700 * time.Millisecond)
	if n := hits.Load(); n != 1 {
		t.Errorf("origin got GET /slow %d times (err %v after %v), want 1", n, err, time.Since(start).Round(time.Millisecond))
	}
}

// A bodiless POST on a kept-alive connection the origin closed while idle
// fails; http.Transport notices the close in the background and redials.
func TestDirectStalePost(t *testing.T) {
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	o.closeAfterOK.Store(true)
	d, _ := newTestDirect(t, o, 4, time.Second)
	get(t, d, o.URL+"/")
	time.Sleep(50 * time.Millisecond)
	req, _ := http.NewRequest("POST", o.URL+"/logout", nil)
	if resp, err := d.RoundTrip(req); err != nil {
		t.Errorf("direct: %v", err)
	} else {
		resp.Body.Close()
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	get(t, tr, o.URL+"/")
	time.Sleep(50 * time.Millisecond)
	req, _ = http.NewRequest("POST", o.URL+"/logout", nil)
	if resp, err := tr.RoundTrip(req); err != nil {
		t.Errorf("http.Transport: %v", err)
	} else {
		resp.Body.Close()
	}
}

// Bytes the origin sends on an idle connection (a 408 before closing) are
// taken as the next request's answer.
func TestDirectUnaskedAnswerDropped(t *testing.T) {
	addr := rawOrigin(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := br.Peek(1); err != nil {
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
			time.Sleep(100 * time.Millisecond)
		}
	})
	s := newSlots(4)
	d := newDirect(dialTo(addr), s, time.Second, time.Minute, transportOn)
	u := "http://" + addr + "/"
	get(t, d, u)
	time.Sleep(80 * time.Millisecond)
	if status, _, err := get(t, d, u); status != 200 {
		t.Errorf("second GET: %d %v, want 200 (the 408 was for no request)", status, err)
	}
}

// 103 Early Hints are no longer passed on by the ReverseProxy.
func TestDirectEarlyHints(t *testing.T) {
	o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "ok")
	}))
	defer o.Close()
	h, _ := New(Config{Upstream: o.URL, ConnOf: func(*http.Request) *auth.Conn { return nil }})
	front := httptest.NewServer(h)
	defer front.Close()
	got := 0
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { got++; return nil }})
	req, _ := http.NewRequestWithContext(ctx, "GET", front.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got == 0 {
		t.Errorf("client got no 103 through the gateway")
	}
}

// A GET on a kept-alive connection the origin reset while idle: the write
// fails (not wrapped in noAnswer) and the GET is not retried.
func TestDirectStaleResetRetried(t *testing.T) {
	addr := rawOrigin(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		time.Sleep(20 * time.Millisecond)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	d := newDirect(dialTo(addr), newSlots(4), time.Second, time.Minute, transportOn)
	u := "http://" + addr + "/"
	get(t, d, u)
	time.Sleep(100 * time.Millisecond)
	if status, _, err := get(t, d, u); err != nil {
		t.Errorf("GET after an idle reset: %d %v, want a retry", status, err)
	}
}

// A cancel that lands between the header's arrival and SetDeadline(zero)
// is lost: the body read of a long poll never ends.
func TestDirectCancelNotLost(t *testing.T) {
	block := make(chan struct{})
	o := newOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-block:
		case <-time.After(20 * time.Second):
		}
	})
	defer close(block)
	d, _ := newTestDirect(t, o, 0, 5*time.Second)
	var stuck atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 400; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", o.URL+"/", nil)
			go func() { time.Sleep(time.Duration(i%50)*20*time.Microsecond + 150*time.Microsecond); cancel() }()
			resp, err := d.RoundTrip(req)
			if err != nil {
				return
			}
			done := make(chan struct{})
			go func() { io.Copy(io.Discard, resp.Body); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				stuck.Add(1)
			}
		}(i)
	}
	wg.Wait()
	if n := stuck.Load(); n > 0 {
		t.Errorf("%d body reads still blocked 2 s after their request was cancelled", n)
	}
}

// rawOrigin serves each connection with serve, by hand, until the test
// ends, and returns its address.
func rawOrigin(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

func dialTo(addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", addr) }
}
