package server

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"html/template"
	"mime"
	"net/http"
	"strings"
)

//go:embed index.html
var indexHTML string

var indexTmpl = template.Must(template.New("index").Funcs(template.FuncMap{
	"deref": func(b *bool) bool { return b != nil && *b },
}).Parse(indexHTML))

// Handler returns the server's HTTP handler: the index page at / and the
// connection report at /debug.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug", s.serveDebug)
	mux.HandleFunc("GET /{$}", s.serveIndex)
	return http.MaxBytesHandler(securityHeaders(mux), s.cfg.MaxBodyBytes)
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

func (s *Server) serveDebug(w http.ResponseWriter, r *http.Request) {
	rep := s.report(r.Context(), r.TLS)
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

func (s *Server) serveIndex(w http.ResponseWriter, r *http.Request) {
	rep := s.report(r.Context(), r.TLS)
	var buf bytes.Buffer
	if err := indexTmpl.Execute(&buf, struct {
		R    *Report
		Host string
	}{rep, r.Host}); err != nil {
		http.Error(w, "cannot render page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")
	w.Write(buf.Bytes())
}
