package server

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"html/template"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
)

//go:embed index.html
var indexHTML string

var indexTmpl = template.Must(template.New("index").Funcs(template.FuncMap{
	"deref": func(b *bool) bool { return b != nil && *b },
}).Parse(indexHTML))

// Pages returns the server's own pages under prefix (which ends in "/"):
// the index page at prefix and the connection report at prefix+"debug".
// Other paths are 404.
func (s *Server) Pages(prefix string) http.Handler { return s.pagesFor(s.auth, prefix) }

// pagesFor is Pages for the site whose Authenticator is a.
func (s *Server) pagesFor(a *auth.Authenticator, prefix string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+prefix+"debug", DebugHandler(a))
	mux.Handle("GET "+prefix+"{$}", IndexHandler(a, prefix+"debug"))
	return http.MaxBytesHandler(securityHeaders(readBody(mux, s.cfg.ReadHeaderTimeout)), s.cfg.MaxBodyBytes)
}

// readBody reads a request's body (within MaxBodyBytes, and within
// timeout) before h answers: the pages take none, but a body that breaks
// HTTP/2's rules, a content-length its DATA frames do not add up to, must
// be refused with the stream error RFC 9113 (Section 8.1.1) asks for,
// which the body's reader sends, rather than answered as if it were whole
// (h2spec 8.1.2.6); the deadline keeps a body that never ends from
// holding its handler.
func readBody(h http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			rc.SetReadDeadline(time.Now().Add(timeout))
			_, err := io.Copy(io.Discard, r.Body)
			rc.SetReadDeadline(time.Time{})
			if err != nil {
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// wantsJSON reports whether the request asks for /debug as JSON, by
// ?format=json or an Accept header that names application/json.
func wantsJSON(r *http.Request) bool {
	if f := r.URL.Query().Get("format"); f != "" {
		return f == "json"
	}
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "application/json" {
			return true
		}
	}
	return false
}

// DebugHandler answers with the Report of the request's connection: the
// reference server's /debug lines as text/plain, or JSON when asked
// (?format=json or Accept: application/json). The http.Server must have
// ConnContext as its ConnContext.
func DebugHandler(a *auth.Authenticator) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveDebug(a, w, r) })
}

// IndexHandler serves the page that explains request mTLS and shows the
// visitor's connection; debugPath is where DebugHandler answers.
func IndexHandler(a *auth.Authenticator, debugPath string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveIndex(a, debugPath, w, r) })
}

func serveDebug(a *auth.Authenticator, w http.ResponseWriter, r *http.Request) {
	rep := NewReport(a, r)
	if wantsJSON(r) {
		b, err := MarshalReport(rep)
		if err != nil {
			http.Error(w, "cannot encode report", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rep.WriteText(w)
}

// MarshalReport encodes a report as indented JSON with a final newline.
func MarshalReport(rep *Report) ([]byte, error) {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func serveIndex(a *auth.Authenticator, debugPath string, w http.ResponseWriter, r *http.Request) {
	rep := NewReport(a, r)
	var buf bytes.Buffer
	if err := indexTmpl.Execute(&buf, struct {
		R     *Report
		Host  string
		Debug string
	}{rep, r.Host, debugPath}); err != nil {
		http.Error(w, "cannot render page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")
	w.Write(buf.Bytes())
}
