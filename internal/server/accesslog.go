package server

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/gateway"
	"github.com/req-mtls/req-mtls/internal/metrics"
	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/internal/safetext"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// advanceOf is advance(r), or nil without advance.
func advanceOf(advance func(*http.Request) *policy.Advance, r *http.Request) *policy.Advance {
	if advance == nil {
		return nil
	}
	return advance(r)
}

// observe wraps h to count the gateway's origin requests in m and, when
// log is not nil, to write one line per request to it: who (address,
// flags, certificate and the handshake's decision), what (method, host,
// path), and how it went (status, bytes, duration, the origin's time).
func observe(h http.Handler, m *metrics.Metrics, log *slog.Logger, sigs *webbotauth.Verifier, advance func(*http.Request) *policy.Advance) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var wba webbotauth.Result
		if sigs != nil {
			// The limit tokens the site's rules will take, taken with
			// the nonce check when the fleet's store can.
			if adv := advanceOf(advance, r); adv != nil {
				r = r.WithContext(policy.WithAdvance(r.Context(), adv))
			}
			// The request's signature verdict, made once: the gateway's
			// fields, /debug, this log line and the metrics read it.
			wba = sigs.Verify(r)
			r = webbotauth.WithResult(r, wba)
			m.WebBotAuth(wba.Status)
		}
		var timing *gateway.Timing
		var rec *recorder
		if log != nil {
			// The origin's timing and the response's, in one
			// allocation.
			st := &struct {
				timing gateway.Timing
				rec    recorder
			}{rec: recorder{ResponseWriter: w, status: http.StatusOK}}
			timing, rec, w = &st.timing, &st.rec, &st.rec
		} else {
			timing = new(gateway.Timing)
		}
		// The line and the metrics are written in a defer: a response
		// the handler aborts (panic(http.ErrAbortHandler): an origin's
		// body cut short, a client gone) needs them most.
		aborted := true
		defer func() {
			if timing.Sent {
				m.Upstream(timing.Status, timing.Upstream)
			}
			if log == nil {
				return
			}
			// One reading of the clock: the request's end, and the
			// fast line's time.
			now := time.Now()
			if ah, ok := log.Handler().(*AccessHandler); ok {
				// The same line, written without slog's generic
				// formatting (accessline.go).
				l := ah.begin(now, "request")
				describeRequest(l, r, rec, now.Sub(start), timing, &wba, aborted)
				ah.end(l)
				return
			}
			f := &attrFields{attrs: make([]slog.Attr, 0, 20)}
			describeRequest(f, r, rec, now.Sub(start), timing, &wba, aborted)
			log.LogAttrs(r.Context(), slog.LevelInfo, "request", f.attrs...)
		}()
		h.ServeHTTP(w, gateway.WithTiming(r, timing))
		aborted = false
	})
}

// fields receives an access log line's fields in order.
type fields interface {
	str(k, v string)
	int(k string, v int64)
	dur(k string, d time.Duration)
	flag(k string)     // k=true
	conn(c *auth.Conn) // the connection's part
}

// describeRequest gives f the fields of a request's line: who (address,
// flags, certificate and the handshake's decision), what (method, host,
// path), and how it went (status, bytes, duration, the origin's time, the
// signature's verdict), and whether the handler aborted the response.
func describeRequest(f fields, r *http.Request, rec *recorder, took time.Duration, timing *gateway.Timing, wba *webbotauth.Result, aborted bool) {
	f.str("client", r.RemoteAddr)
	if c := ConnOf(r); c != nil {
		f.conn(c)
	}
	f.str("method", r.Method)
	f.str("host", safetext.Escape(r.Host))
	f.str("path", safetext.Escape(r.URL.RequestURI()))
	f.str("proto", r.Proto)
	f.int("status", int64(rec.status))
	f.int("bytes", rec.bytes)
	f.dur("duration", took)
	if timing.Upstream > 0 {
		f.dur("upstream_time", timing.Upstream)
	}
	if timing.Err != "" {
		f.str("upstream_error", timing.Err)
	}
	if v := &timing.Verdict; v.Rule != "" || v.Shadow != "" {
		if v.Rule != "" {
			f.str("rule", v.Rule)
			f.str("action", v.Action.String())
		}
		if v.Shadow != "" {
			f.str("shadow_rule", v.Shadow)
			f.str("shadow_action", v.ShadowAction.String())
			f.int("shadow_status", int64(v.ShadowStatus))
		}
	}
	if aborted {
		f.flag("aborted")
	}
	if wba.Status != "" {
		f.str("web_bot_auth", wba.Status)
		if wba.Agent != "" {
			f.str("web_bot_auth_agent", safetext.Escape(wba.Agent))
			f.str("web_bot_auth_keyid", wba.KeyID)
		}
		if wba.Reason != "" {
			f.str("web_bot_auth_reason", safetext.Escape(wba.Reason))
		}
	}
}

// connAttrs is the connection's part of its lines, the same on every
// request of it: described once.
func connAttrs(c *auth.Conn) []slog.Attr {
	return c.Memo(connAttrsKey{}, func() any {
		return append([]slog.Attr{slog.Any("tls_flags", c.Flags())}, decisionAttrs(c.Decision())...)
	}).([]slog.Attr)
}

// attrFields collects the fields as slog attributes, for any handler.
type attrFields struct{ attrs []slog.Attr }

func (f *attrFields) str(k, v string)               { f.attrs = append(f.attrs, slog.String(k, v)) }
func (f *attrFields) int(k string, v int64)         { f.attrs = append(f.attrs, slog.Int64(k, v)) }
func (f *attrFields) dur(k string, d time.Duration) { f.attrs = append(f.attrs, slog.Duration(k, d)) }
func (f *attrFields) flag(k string)                 { f.attrs = append(f.attrs, slog.Bool(k, true)) }
func (f *attrFields) conn(c *auth.Conn)             { f.attrs = append(f.attrs, connAttrs(c)...) }

// conn writes the connection's part of a line: formatted once per
// connection and handler, and shared by connections that agree on it.
func (l *line) conn(c *auth.Conn) {
	l.raw(c.Memo(l.h, func() any { return l.h.connPart(c) }).([]byte))
}

// connAttrsKey keys a connection's log attributes in auth.Conn.Memo.
type connAttrsKey struct{}

// decisionAttrs describes a handshake's decision for a log line.
func decisionAttrs(d *auth.Decision) []slog.Attr {
	if d == nil {
		return nil
	}
	attrs := []slog.Attr{slog.Bool("cert_requested", d.Requested), slog.Bool("resumed", d.Resumed)}
	if len(d.Chain) == 0 {
		return append(attrs, slog.String("cert", "none"))
	}
	leaf := d.Chain[0]
	attrs = append(attrs,
		slog.String("cert_subject", safetext.Escape(leaf.Subject.String())),
		slog.String("cert_san", auth.CertName(leaf)),
		slog.String("cert_sha256", gateway.CertSHA256(leaf.Raw)), // as Req-Mtls-Cert-Sha256
		slog.String("cert_store", d.Store.String()),
	)
	if d.Agent != "" {
		attrs = append(attrs, slog.String("cert_agent", safetext.Escape(d.Agent)))
	}
	if d.Err != nil {
		return append(attrs, slog.String("cert", "invalid"), slog.String("cert_error", safetext.Escape(d.Err.Error())))
	}
	return append(attrs, slog.String("cert", "valid"))
}

// recorder notes the status and the bytes of a response; it lets through
// flushes (streaming) and hijacks (WebSockets).
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader && code >= 200 {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection over (a WebSocket upgrade: status 101).
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	r.status = http.StatusSwitchingProtocols
	return h.Hijack()
}

// Unwrap is for http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// rateLimiter lets through at most burst events at once and rate per
// second after, and counts what it held back.
type rateLimiter struct {
	mu         sync.Mutex
	rate       float64
	burst      float64
	tokens     float64
	last       time.Time
	suppressed int
}

func newRateLimiter(rate, burst float64) *rateLimiter {
	return &rateLimiter{rate: rate, burst: burst, tokens: burst}
}

// allow reports whether an event may go through now, and how many were
// held back since the last one that did.
func (l *rateLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
