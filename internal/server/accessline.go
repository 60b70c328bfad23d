package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/logbuf"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// AccessHandler is a slog handler for access logs: it writes exactly what
// slog's TextHandler (or JSONHandler) would, and lets the server write its
// request lines without slog's generic formatting, which costs a few
// percent of a proxied request. Records that do not come from the server
// go through the standard handler.
type AccessHandler struct {
	slog.Handler           // the standard handler for the format, on w
	w            io.Writer // a line per Write, whoever writes it
	json         bool
	clock        atomic.Pointer[stamp] // the last second's formatted time

	partsMu sync.Mutex
	parts   map[string]connPart // by the client certificate's DER
}

// connPart is the formatted connection part of a line and what it was made
// from. Bots come back with the same certificate on many connections; its
// description (the subject's string, its hash) and the formatting cost more
// than the rest of the line.
type connPart struct {
	flags                        tlsflags.Set
	requested, resumed, hasChain bool
	store                        auth.StoreKind
	err, agent                   string
	text                         []byte
}

// maxParts bounds the cache of connection parts; past it, it starts over.
const maxParts = 1024

// connPart returns the formatted connection part for c. (It does not use
// c.Memo: the caller memoizes its result there.)
func (h *AccessHandler) connPart(c *auth.Conn) []byte {
	d := c.Decision()
	want := connPart{flags: c.Flags()}
	var raw []byte
	if d != nil {
		want.requested, want.resumed, want.store, want.hasChain = d.Requested, d.Resumed, d.Store, len(d.Chain) > 0
		if d.Err != nil {
			want.err = d.Err.Error()
		}
		want.agent = d.Agent
		if len(d.Chain) > 0 {
			raw = d.Chain[0].Raw
		}
	}
	h.partsMu.Lock()
	got, ok := h.parts[string(raw)]
	h.partsMu.Unlock()
	if ok && got.flags == want.flags && got.requested == want.requested && got.resumed == want.resumed &&
		got.hasChain == want.hasChain && got.store == want.store && got.err == want.err && got.agent == want.agent {
		return got.text
	}
	want.text = h.formatAttrs(append([]slog.Attr{slog.Any("tls_flags", c.Flags())}, decisionAttrs(d)...))
	h.partsMu.Lock()
	if h.parts == nil || len(h.parts) >= maxParts {
		h.parts = map[string]connPart{}
	}
	h.parts[string(raw)] = want
	h.partsMu.Unlock()
	return want.text
}

// lockedWriter writes one line at a time, whoever writes it: the request
// lines and any other record through the standard handler.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// NewAccessHandler returns an access log handler writing text lines (as
// slog.TextHandler) or JSON lines (as slog.JSONHandler) to w.
func NewAccessHandler(w io.Writer, json bool) *AccessHandler {
	if _, ok := w.(*logbuf.Writer); !ok {
		// (A logbuf.Writer takes each Write whole already.)
		w = &lockedWriter{w: w}
	}
	h := &AccessHandler{w: w, json: json}
	if json {
		h.Handler = slog.NewJSONHandler(w, nil)
	} else {
		h.Handler = slog.NewTextHandler(w, nil)
	}
	return h
}

// A line is an access log line being written.
type line struct {
	buf  []byte
	json bool
	h    *AccessHandler
}

var linePool = sync.Pool{New: func() any { return &line{buf: make([]byte, 0, 512)} }}

// begin starts a line: its time, level and message.
func (h *AccessHandler) begin(t time.Time, msg string) *line {
	l := linePool.Get().(*line)
	l.buf, l.json, l.h = l.buf[:0], h.json, h
	if h.json {
		l.buf = append(l.buf, `{"time":"`...)
		l.buf = t.AppendFormat(l.buf, time.RFC3339Nano)
		l.buf = append(l.buf, `","level":"INFO","msg":`...)
		l.buf = appendJSONString(l.buf, msg)
	} else {
		l.buf = append(l.buf, "time="...)
		l.buf = h.appendTime(l.buf, t)
		l.buf = append(l.buf, " level=INFO msg="...)
		l.buf = appendTextString(l.buf, msg)
	}
	return l
}

// textTime is slog's TextHandler's time: RFC 3339 with milliseconds (its
// JSONHandler gives every digit).
const textTime = "2006-01-02T15:04:05.000Z07:00"

// A stamp is a second's time formatted as textTime, its milliseconds
// left to fill in.
type stamp struct {
	sec  int64
	loc  *time.Location
	text []byte
}

// msAt is where the milliseconds are in a stamp's text.
const msAt = len("2006-01-02T15:04:05.")

// appendTime formats t as textTime. Formatting a time is a good part of a
// line's cost, and all that changes within a second is its milliseconds.
func (h *AccessHandler) appendTime(b []byte, t time.Time) []byte {
	sec := t.Unix()
	st := h.clock.Load()
	if st == nil || st.sec != sec || st.loc != t.Location() {
		st = &stamp{sec: sec, loc: t.Location(), text: t.Truncate(time.Second).AppendFormat(nil, textTime)}
		if len(st.text) < msAt+3 || st.text[msAt-1] != '.' {
			// A year of other than four digits.
			return t.AppendFormat(b, textTime)
		}
		h.clock.Store(st)
	}
	ms := t.Nanosecond() / 1e6
	b = append(b, st.text[:msAt]...)
	b = append(b, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, st.text[msAt+3:]...)
}

// key starts a field. Keys are this package's own names, letters, digits
// and underscores, which neither format quotes or escapes.
func (l *line) key(k string) {
	if l.json {
		l.buf = append(l.buf, ',', '"')
		l.buf = append(l.buf, k...)
		l.buf = append(l.buf, '"', ':')
	} else {
		l.buf = append(l.buf, ' ')
		l.buf = append(l.buf, k...)
		l.buf = append(l.buf, '=')
	}
}

func (l *line) str(k, v string) {
	l.key(k)
	if l.json {
		l.buf = appendJSONString(l.buf, v)
	} else {
		l.buf = appendTextString(l.buf, v)
	}
}

func (l *line) int(k string, v int64) {
	l.key(k)
	l.buf = strconv.AppendInt(l.buf, v, 10)
}

// flag is a true boolean.
func (l *line) flag(k string) {
	l.key(k)
	l.buf = append(l.buf, "true"...)
}

// dur is a duration: its String in text, nanoseconds in JSON (as slog).
func (l *line) dur(k string, d time.Duration) {
	l.key(k)
	if l.json {
		l.buf = strconv.AppendInt(l.buf, int64(d), 10)
	} else {
		// What d.String gives, without making a string of it: never
		// quoted (digits, a point, a unit, a sign).
		l.buf = appendDuration(l.buf, d)
	}
}

// appendDuration appends d as time.Duration's String does: "1h2m3.5s",
// "1.5s", "659.024µs", "0s".
func appendDuration(b []byte, d time.Duration) []byte {
	u := uint64(d)
	if d < 0 {
		b = append(b, '-')
		u = -u
	}
	if u < uint64(time.Second) {
		// Under a second: the largest of ns, µs and ms that keeps a
		// digit before the point.
		var prec int
		var unit string
		switch {
		case u == 0:
			return append(b, "0s"...)
		case u < uint64(time.Microsecond):
			return append(strconv.AppendUint(b, u, 10), "ns"...)
		case u < uint64(time.Millisecond):
			prec, unit = 3, "µs"
		default:
			prec, unit = 6, "ms"
		}
		b = appendFrac(b, u, prec)
		return append(b, unit...)
	}
	secs := u / uint64(time.Second)
	frac := u % uint64(time.Second)
	if h := secs / 3600; h > 0 {
		b = append(strconv.AppendUint(b, h, 10), 'h')
	}
	if m := secs / 60 % 60; secs >= 60 {
		b = append(strconv.AppendUint(b, m, 10), 'm')
	}
	b = appendFrac(b, secs%60*uint64(time.Second)+frac, 9)
	return append(b, 's')
}

// appendFrac appends v / 10^prec with the fraction's trailing zeros (and a
// bare point) left out.
func appendFrac(b []byte, v uint64, prec int) []byte {
	pow := uint64(1)
	for range prec {
		pow *= 10
	}
	b = strconv.AppendUint(b, v/pow, 10)
	frac := v % pow
	if frac == 0 {
		return b
	}
	for frac%10 == 0 {
		frac /= 10
		prec--
	}
	var digits [9]byte
	for i := prec - 1; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	b = append(b, '.')
	return append(b, digits[:prec]...)
}

// raw appends attributes formatted before (formatAttrs), each with its
// separator.
func (l *line) raw(b []byte) { l.buf = append(l.buf, b...) }

// end finishes the line and writes it.
func (h *AccessHandler) end(l *line) {
	if l.json {
		l.buf = append(l.buf, '}')
	}
	l.buf = append(l.buf, '\n')
	h.w.Write(l.buf)
	if cap(l.buf) <= 16<<10 {
		linePool.Put(l)
	}
}

// formatAttrs formats attrs with the standard handler, as they would
// appear after the message: each preceded by its separator. For what is the
// same on every line of a connection, formatted once.
func (h *AccessHandler) formatAttrs(attrs []slog.Attr) []byte {
	var b bytes.Buffer
	drop := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey {
			return slog.Attr{}
		}
		return a
	}
	opts := &slog.HandlerOptions{ReplaceAttr: drop}
	var sh slog.Handler = slog.NewTextHandler(&b, opts)
	if h.json {
		sh = slog.NewJSONHandler(&b, opts)
	}
	r := slog.NewRecord(time.Time{}, slog.LevelInfo, "", 0)
	r.AddAttrs(attrs...)
	sh.Handle(context.Background(), r)
	out := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	if h.json {
		// {"a":1,"b":2} → ,"a":1,"b":2
		out = bytes.TrimSuffix(bytes.TrimPrefix(out, []byte("{")), []byte("}"))
		if len(out) > 0 {
			out = append([]byte{','}, out...)
		}
	} else if len(out) > 0 {
		out = append([]byte{' '}, out...)
	}
	return out
}

// appendTextString writes s as slog's TextHandler does: bare, or quoted
// when it is empty or holds a space, '=', a quote, a control or
// unprintable character, or invalid UTF-8.
func appendTextString(b []byte, s string) []byte {
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func needsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c != '\\' && (c == ' ' || c == '=' || !jsonSafe(c)) {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// jsonSafe reports whether an ASCII byte goes into a JSON string as it is.
func jsonSafe(c byte) bool { return c >= 0x20 && c != '"' && c != '\\' }

// appendJSONString writes s as a JSON string, as slog's JSONHandler does
// (encoding/json's escaping, without HTML's).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe(c) {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigit[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigit = "0123456789abcdef"
