package server

import (
	"crypto/rand"
	"io"
	"net"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testpki"
)

// TestHostileConnections opens 1,000 hostile connections at once (silent,
// slowloris at one byte a second, a ClientHello announcing 16 MB, garbage
// records) and checks that a flagged client is still served, that each
// hostile connection is cut off by the handshake deadline (or refused at
// once), and that no goroutine or memory is left behind. The flagged
// client's latency with and without the attack is logged, not asserted.
func TestHostileConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	p := testpki.New(t)
	const timeout = 2 * time.Second
	ts := startServer(t, p, Config{HandshakeTimeout: timeout})
	addr := ts.url.Host
	flagged := withCert(p, "valid", 80)

	measure := func(n int) []time.Duration {
		var d []time.Duration
		for range n {
			start := time.Now()
			o := fetch(t, ts, p, flagged, "/debug")
			if o.err != nil {
				t.Fatalf("flagged request failed: %v", o.err)
			}
			d = append(d, time.Since(start))
		}
		slices.Sort(d)
		return d
	}
	measure(5) // warm up
	baseGoroutines := runtime.NumGoroutine()
	baseLive := liveHeap()
	quiet := measure(50)

	hello := readHelloSeed(t)
	kinds := []struct {
		name string
		n    int
		send func(c net.Conn)
	}{
		{"silent", 400, func(net.Conn) {}},
		{"slowloris", 400, func(c net.Conn) {
			for _, b := range hello {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}},
		{"announces-16MB", 100, func(c net.Conn) { c.Write([]byte{0x16, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff}) }},
		{"garbage", 100, func(c net.Conn) {
			b := make([]byte, 512)
			rand.Read(b)
			b[0], b[1], b[2] = 0x17, 3, 3
			c.Write(b)
		}},
	}
	// attack opens every hostile connection, runs during while they are
	// open, and returns once the server has dealt with all of them.
	attack := func(during func()) {
		var wg sync.WaitGroup
		var cut, open atomic.Int64
		var conns []net.Conn
		for _, k := range kinds {
			for range k.n {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatalf("%s: %v", k.name, err)
				}
				conns = append(conns, c)
				open.Add(1)
				wg.Add(2)
				go func() { defer wg.Done(); k.send(c) }()
				go func() {
					defer wg.Done()
					c.SetReadDeadline(time.Now().Add(10 * timeout))
					_, err := io.Copy(io.Discard, c)
					if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
						cut.Add(1) // the server ended it
					}
				}()
			}
		}
		during()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
		if got := cut.Load(); got != open.Load() {
			t.Errorf("server cut %d of %d hostile connections", got, open.Load())
		}
		// Everything the attack started winds down.
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > baseGoroutines+5 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if g := runtime.NumGoroutine(); g > baseGoroutines+5 {
			t.Errorf("goroutines: %d before, %d after", baseGoroutines, g)
		}
	}
	var attacked []time.Duration
	attack(func() { attacked = measure(50) })
	t.Logf("flagged request latency, quiet:      p50 %v  p99 %v", quiet[len(quiet)/2], quiet[len(quiet)*99/100])
	t.Logf("flagged request latency, 1000 open:  p50 %v  p99 %v", attacked[len(attacked)/2], attacked[len(attacked)*99/100])
	// The first round grows what the runtime keeps for reuse (goroutine
	// descriptors) and the test's log sink; a second round must not grow
	// the live heap by anything like 1,000 connections' worth.
	first := liveHeap()
	attack(func() {})
	second := liveHeap()
	t.Logf("live heap: %d KiB before, %d KiB after one round, %d KiB after two; goroutines %d before, %d after",
		baseLive>>10, first>>10, second>>10, baseGoroutines, runtime.NumGoroutine())
	if second > first+1<<20 {
		t.Errorf("live heap grew from %d to %d bytes over a second round", first, second)
	}
}

// liveHeap returns the bytes of heap objects live after full GCs. Two:
// sync.Pool keeps what it holds through one (io.Discard's buffers, say).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func readHelloSeed(t *testing.T) []byte {
	t.Helper()
	// A real ClientHello record, so the slowloris looks legitimate.
	return []byte{0x16, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3}
}

// halfHello opens a connection and sends the first size bytes of a
// ClientHello record announcing 16 KiB of handshake data, then waits.
func halfHello(t *testing.T, addr string, size int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rec := make([]byte, 5+size)
	copy(rec, []byte{22, 3, 1, 0x40, 0x00, 1, 0, 0x3f, 0xfc})
	c.Write(rec)
	return c
}

// TestHandshakeBounds: handshakes in progress and the bytes their
// ClientHellos hold are bounded; connections past the bounds are refused
// at once, counted, and the server still serves.
func TestHandshakeBounds(t *testing.T) {
	p := testpki.New(t)
	ts := startServer(t, p, Config{HandshakeTimeout: 20 * time.Second, MaxHandshakes: 20, MaxHelloBytes: 256 << 10})
	addr := ts.url.Host
	// Memory: each half-sent hello holds a record buffer of 16389 bytes
	// (the 16 KiB record and its header); 256 KiB holds 15 of them.
	for range 15 {
		halfHello(t, addr, 12000)
	}
	waitFor(t, "the hellos to be buffered", func() bool { return ts.auth.HelloBytes() == 15*16389 })
	c := halfHello(t, addr, 12000)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	alert, _ := io.ReadAll(c)
	if string(alert) != "\x15\x03\x03\x00\x02\x02\x50" {
		t.Errorf("past the memory bound: read %x, want an internal_error alert", alert)
	}
	if used := ts.auth.HelloBytes(); used > 256<<10 {
		t.Errorf("%d bytes held, over the bound", used)
	}
	// Handshakes: 20 in progress at most (the 15 above and 5 silent),
	// once the refused one has ended.
	waitFor(t, "the refused handshake to end", func() bool { return ts.inFlight.Load() == 15 })
	for range 5 {
		halfHello(t, addr, 0)
	}
	waitFor(t, "20 handshakes in progress", func() bool { return ts.inFlight.Load() == 20 })
	c = halfHello(t, addr, 0)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("past the handshake bound: read %d bytes, %v; want the connection closed", n, err)
	}
	waitFor(t, "the refusal in the log", func() bool {
		return strings.Contains(ts.logs.String(), "connection refused: too many handshakes in progress")
	})
	w := httptest.NewRecorder()
	ts.AdminHandler(false).ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range []string{
		`reqmtls_handshake_failures_total{reason="too_many_handshakes"} 1`,
		`reqmtls_clienthello_rejections_total{reason="memory_bound"} 1`,
		`reqmtls_handshakes_in_progress 20`,
	} {
		if !strings.Contains(w.Body.String(), line+"\n") {
			t.Errorf("metrics lack %q:\n%s", line, grepLines(w.Body.String(), "reqmtls_"))
		}
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
