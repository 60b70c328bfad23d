package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/gateway"
	"github.com/req-mtls/req-mtls/internal/metrics"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/testutil"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// BenchmarkAccessLogDecision: the handshake's part of an access log line,
// described and written, for a request on a connection with a validated
// certificate.
func BenchmarkAccessLogDecision(b *testing.B) {
	p := testpki.New(b)
	leaf, err := certs.LoadCertificate(p.Clients["valid"][0])
	if err != nil {
		b.Fatal(err)
	}
	d := &auth.Decision{Flagged: true, Requested: true, Chain: []*x509.Certificate{leaf}, Store: auth.StoreClient}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ReportAllocs()
	for b.Loop() {
		log.LogAttrs(b.Context(), slog.LevelInfo, "request", decisionAttrs(d)...)
	}
}

// BenchmarkAccessLog: what observe adds to a request, with the access log
// off and on (the connection's part is BenchmarkAccessLogDecision).
func BenchmarkAccessLog(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "6")
		io.WriteString(w, "hello\n")
	})
	for _, c := range []struct {
		name string
		log  *slog.Logger
	}{{"off", nil}, {"slog", slog.New(slog.NewTextHandler(io.Discard, nil))}, {"NewAccessHandler", slog.New(NewAccessHandler(io.Discard, false))}} {
		log := c.log
		b.Run(c.name, func(b *testing.B) {
			o := observe(h, metrics.New(nil, nil, nil, nil), log, nil, nil)
			r := httptest.NewRequest("GET", "https://site.example/some/path?q=1", nil)
			b.ReportAllocs()
			for b.Loop() {
				o.ServeHTTP(discardWriter{}, r)
			}
		})
	}
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (discardWriter) WriteHeader(int)             {}

// tricky are values whose formatting differs between bare, quoted and
// escaped forms.
var tricky = []string{"", "plain", "with space", "a=b", `quote"d`, `back\slash`, "new\nline", "tab\there",
	"\x00\x1f\x7f", "ünïcödé", "µs", "\u2028\u2029", "<a&b>", "\xff\xfe invalid", "emoji 🎉", "nbsp\u00a0x", "=", "\\"}

// TestAccessLineMatchesSlog: the fast line is byte for byte what slog's
// handler writes for the same fields, in text and JSON.
func TestAccessLineMatchesSlog(t *testing.T) {
	p := testpki.New(t)
	leaf, err := certs.LoadCertificate(p.Clients["forged-name"][0])
	if err != nil {
		t.Fatal(err)
	}
	d := &auth.Decision{Flagged: true, Requested: true, Chain: []*x509.Certificate{leaf}, Store: auth.StoreClient, Err: errors.New("x509: \"bad\"\nthing")}
	connPart := append([]slog.Attr{slog.Any("tls_flags", []int{8, 80})}, decisionAttrs(d)...)
	// A moment with digits in every place of the fraction, now.
	at := time.Now().UTC().Truncate(time.Second).Add(94_567_891)
	for _, json := range []bool{false, true} {
		var want, got bytes.Buffer
		var std slog.Handler = slog.NewTextHandler(&want, nil)
		if json {
			std = slog.NewJSONHandler(&want, nil)
		}
		ah := NewAccessHandler(&got, json)
		r := slog.NewRecord(at, slog.LevelInfo, "request", 0)
		l := ah.begin(at, "request")
		r.AddAttrs(connPart...)
		l.raw(ah.formatAttrs(connPart))
		for i, v := range tricky {
			k := fmt.Sprintf("k%d", i)
			r.AddAttrs(slog.String(k, v))
			l.str(k, v)
		}
		r.AddAttrs(slog.Int64("status", 200), slog.Int64("bytes", -3), slog.Duration("duration", 659024*time.Nanosecond), slog.Duration("zero", 0))
		l.int("status", 200)
		l.int("bytes", -3)
		l.dur("duration", 659024*time.Nanosecond)
		l.dur("zero", 0)
		r.AddAttrs(slog.Bool("aborted", true))
		l.flag("aborted")
		if err := std.Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		ah.end(l)
		if got.String() != want.String() {
			t.Errorf("json %v:\n got %s\nwant %s", json, got.String(), want.String())
		}
	}
}

// TestAccessLogFastPathSameLine: a request through observe gives the same
// line with NewAccessHandler as with slog's own handler.
func TestAccessLogFastPathSameLine(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout\n")
	})
	stamp := regexp.MustCompile(`time=\S+|"time":"[^"]+"|duration=\S+|"duration":\d+`)
	for _, json := range []bool{false, true} {
		var std, fast bytes.Buffer
		var sh slog.Handler = slog.NewTextHandler(&std, nil)
		if json {
			sh = slog.NewJSONHandler(&std, nil)
		}
		r := httptest.NewRequest("GET", "https://site.example/a%20b?q=\"x\"", nil)
		r.RemoteAddr = "192.0.2.1:4242"
		observe(h, metrics.New(nil, nil, nil, nil), slog.New(sh), nil, nil).ServeHTTP(httptest.NewRecorder(), r)
		observe(h, metrics.New(nil, nil, nil, nil), slog.New(NewAccessHandler(&fast, json)), nil, nil).ServeHTTP(httptest.NewRecorder(), r)
		a, b := stamp.ReplaceAllString(std.String(), "T"), stamp.ReplaceAllString(fast.String(), "T")
		if a != b || !strings.Contains(a, "418") {
			t.Errorf("json %v:\nslog %s\nfast %s", json, a, b)
		}
	}
}

// TestAccessLogOnConnection: a request on a connection with a certificate
// gets its line through NewAccessHandler, the connection's part included,
// in the same form as through slog's handler.
func TestAccessLogOnConnection(t *testing.T) {
	p := testpki.New(t)
	for _, json := range []bool{false, true} {
		var fast, std testutil.Buffer
		var sh slog.Handler = slog.NewTextHandler(&std, nil)
		if json {
			sh = slog.NewJSONHandler(&std, nil)
		}
		for _, c := range []struct {
			log *slog.Logger
			buf *testutil.Buffer
		}{{slog.New(NewAccessHandler(&fast, json)), &fast}, {slog.New(sh), &std}} {
			ts := startServer(t, p, Config{AccessLog: c.log})
			// The same certificate on three connections, the last
			// with other flags: a part shared by connections that
			// agree, and not by those that do not.
			for _, flags := range [][]int{{80}, {80}, {8, 80}} {
				if o := fetch(t, ts, p, withCert(p, "valid", flags...), "/debug"); o.err != nil {
					t.Fatal(o.err)
				}
			}
			if n := strings.Count(c.buf.String(), "\n"); n != 3 {
				t.Fatalf("%d lines, want 3:\n%s", n, c.buf)
			}
		}
		drop := regexp.MustCompile(`time=\S+|"time":"[^"]+"|duration=\S+|"duration":\d+|client=\S+|"client":"[^"]+"|host=\S+|"host":"[^"]+"`)
		a, b := drop.ReplaceAllString(std.String(), ""), drop.ReplaceAllString(fast.String(), "")
		if a != b || !strings.Contains(a, "valid") || !strings.Contains(a, "client.example") || !strings.Contains(a, "8") {
			t.Errorf("json %v:\nslog %s\nfast %s", json, a, b)
		}
	}
}

// TestAppendDuration: the same text as time.Duration's String.
func TestAppendDuration(t *testing.T) {
	ds := []time.Duration{0, 1, -1, 999, 1000, 1001, 659024, 1500000, 999999999, time.Second, 1500 * time.Millisecond,
		time.Minute, 90 * time.Second, time.Hour, time.Hour + 2*time.Minute + 3500*time.Millisecond, 100 * time.Hour,
		-time.Minute, math.MaxInt64, math.MinInt64, 123456789012345}
	for e := range 19 {
		p := time.Duration(1)
		for range e {
			p *= 10
		}
		ds = append(ds, p, p+1, p-1, 3*p/2, -p)
	}
	for _, d := range ds {
		if got := string(appendDuration(nil, d)); got != d.String() {
			t.Errorf("appendDuration(%d) = %q, want %q", int64(d), got, d.String())
		}
	}
}

func FuzzAppendDuration(f *testing.F) {
	f.Add(int64(659024))
	f.Add(int64(-90 * time.Second))
	f.Fuzz(func(t *testing.T, n int64) {
		d := time.Duration(n)
		if got := string(appendDuration([]byte("x"), d)); got != "x"+d.String() {
			t.Errorf("appendDuration(%d) = %q, want %q", n, got, "x"+d.String())
		}
	})
}

// TestAppendTime: the same text as slog's TextHandler's layout, at any
// moment, in any zone, one second after another and back.
func TestAppendTime(t *testing.T) {
	h := NewAccessHandler(io.Discard, false)
	now := time.Now()
	east := time.FixedZone("east", 5*3600+30*60)
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		ny = time.FixedZone("west", -5*3600)
	}
	times := []time.Time{now, now.Add(time.Millisecond), now.Add(time.Second), now, now.UTC(), now.In(east), now.In(ny),
		now.Truncate(time.Second), now.Truncate(time.Second).Add(-time.Nanosecond),
		time.Date(0, 1, 1, 0, 0, 0, 5e6, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := range 2000 {
		times = append(times, now.Add(time.Duration(i)*1234567*time.Microsecond).In([]*time.Location{time.Local, time.UTC, east, ny}[i%4]))
	}
	for _, at := range times {
		if got, want := string(h.appendTime(nil, at)), at.Format("2006-01-02T15:04:05.000Z07:00"); got != want {
			t.Errorf("appendTime(%v) = %q, want %q", at, got, want)
		}
	}
}

// keyFields records the keys of a line's fields.
type keyFields struct{ keys []string }

func (k *keyFields) str(key, _ string)               { k.keys = append(k.keys, key) }
func (k *keyFields) int(key string, _ int64)         { k.keys = append(k.keys, key) }
func (k *keyFields) dur(key string, _ time.Duration) { k.keys = append(k.keys, key) }
func (k *keyFields) flag(key string)                 { k.keys = append(k.keys, key) }
func (k *keyFields) conn(*auth.Conn)                 {}

// TestAccessLineKeysPlain: every key a request's line can have is one the
// fast line may write without quoting or escaping (line.key).
func TestAccessLineKeysPlain(t *testing.T) {
	r := httptest.NewRequest("GET", "https://site.example/p", nil)
	var k keyFields
	describeRequest(&k, r, &recorder{status: 200}, time.Millisecond,
		&gateway.Timing{Sent: true, Status: 502, Upstream: time.Millisecond, Err: "refused"},
		&webbotauth.Result{Status: "invalid", Reason: "r", Agent: "https://a.example", KeyID: "k"}, true)
	if len(k.keys) < 13 {
		t.Fatalf("only %d keys: %v", len(k.keys), k.keys)
	}
	for _, key := range k.keys {
		if key == "" {
			t.Error("an empty key")
		}
		for _, c := range key {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
				t.Errorf("key %q: not plain", key)
			}
		}
	}
}

// TestAccessLogAbortedResponse: a response the gateway had to abort (the
// origin's body cut short by a reset, the handler ended by
// http.ErrAbortHandler) still gets its access log line, marked aborted,
// and its origin request is counted in the metrics.
func TestAccessLogAbortedResponse(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
				c.(*net.TCPConn).SetLinger(0) // a reset, mid-body
			}()
		}
	}()
	gw, err := gateway.New(gateway.Config{Upstream: "http://" + up.Addr().String(), ConnOf: ConnOf, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.Buffer
	m := metrics.New(nil, nil, nil, nil)
	front := httptest.NewServer(observe(gw, m, slog.New(NewAccessHandler(&logs, false)), nil, nil))
	defer front.Close()
	resp, err := http.Get(front.URL + "/cut")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "\n"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no access log line 5 s after an aborted response")
		}
	}
	line := logs.String()
	for _, want := range []string{"path=/cut", "status=200", "aborted=true"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q: %s", want, line)
		}
	}
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if want := `reqmtls_upstream_requests_total{code="200"} 1`; !strings.Contains(w.Body.String(), want) {
		t.Errorf("metrics lack %s", want)
	}
}
