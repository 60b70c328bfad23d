package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// FuzzAccessStrings: whatever a request carries into the access log (a
// path, a User-Agent, a name from a certificate), the line writes it as
// slog's own handlers do, text and JSON, byte for byte; so no newline or
// control character of it reaches the log raw.
func FuzzAccessStrings(f *testing.F) {
	for _, s := range []string{"", "plain", "a b", "k=v", `"q"`, `back\slash`, "new\nline", "tab\t", "\x00\x1b[31m",
		"\x7f", "ü", "\xff", "\xed\xa0\x80", "\u2028\u2029", "\u202e", "\u00a0", "日本", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, json := range []bool{false, true} {
			var buf bytes.Buffer
			opts := &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey {
					return slog.Attr{}
				}
				return a
			}}
			var h slog.Handler = slog.NewTextHandler(&buf, opts)
			if json {
				h = slog.NewJSONHandler(&buf, opts)
			}
			slog.New(h).Info("", "k", s)
			line := strings.TrimSuffix(buf.String(), "\n")
			var want string
			var got []byte
			if json {
				want = strings.TrimSuffix(strings.TrimPrefix(line, `{"k":`), "}")
				got = appendJSONString(nil, s)
			} else {
				want = strings.TrimPrefix(line, "k=")
				got = appendTextString(nil, s)
			}
			if string(got) != want {
				t.Fatalf("%q (json %v): written %s, slog writes %s", s, json, got, want)
			}
			if bytes.ContainsAny(got, "\n\r") {
				t.Fatalf("%q (json %v): written %q, a line break in it", s, json, got)
			}
		}
	})
}
