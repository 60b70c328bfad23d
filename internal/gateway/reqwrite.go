package gateway

import (
	"bufio"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
)

// writeRequest writes r to bw as r.Write(bw) does, byte for byte, without
// its costs (a transfer writer, formatted printing, a replacer per field
// value): for a request with no body and nothing else that Request.Write
// treats apart (a CONNECT, Connection: close, trailers, a host to
// punycode or with a zone, a client trace that watches the writing), which
// is the common request to the origin. Any other goes to r.Write.
func writeRequest(bw *bufio.Writer, r *http.Request) error {
	host := r.Host
	if host == "" && r.URL != nil {
		host = r.URL.Host
	}
	if !plainRequest(r) || !plainHost(host) {
		return r.Write(bw)
	}
	if !httpguts.ValidHostHeader(host) {
		host = "" // as Request.Write does, not going through a proxy
	}
	ruri := r.URL.RequestURI()
	for i := 0; i < len(ruri); i++ {
		if ruri[i] < ' ' || ruri[i] == 0x7f {
			return r.Write(bw) // which refuses it
		}
	}
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(ruri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	ua := "Go-http-client/1.1"
	if _, ok := r.Header["User-Agent"]; ok {
		ua = r.Header.Get("User-Agent")
	}
	if ua != "" {
		writeField(bw, "User-Agent", ua)
	}
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	var stack [32]string
	keys := stack[:0]
	for k := range r.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range r.Header[k] {
			writeField(bw, k, v)
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// writeField writes a field line as Request.Write does: line breaks in
// the value become spaces, and white space at its ends goes.
func writeField(bw *bufio.Writer, k, v string) {
	if strings.ContainsAny(v, "\r\n") {
		b := []byte(v)
		for i, c := range b {
			if c == '\r' || c == '\n' {
				b[i] = ' '
			}
		}
		v = string(b)
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(textproto.TrimString(v))
	bw.WriteString("\r\n")
}

// plainRequest reports whether Request.Write would write r's header the
// plain way and no body.
func plainRequest(r *http.Request) bool {
	if r.URL == nil || r.Method == http.MethodConnect || r.Close || r.ContentLength != 0 ||
		(r.Body != nil && r.Body != http.NoBody) || r.TransferEncoding != nil || r.Trailer != nil {
		return false
	}
	if t := httptrace.ContextClientTrace(r.Context()); t != nil &&
		(t.WroteHeaderField != nil || t.WroteHeaders != nil || t.WroteRequest != nil || t.Wait100Continue != nil) {
		return false
	}
	return true
}

// plainHost reports whether host is ASCII without a zone: what
// Request.Write sends as it is, when valid.
func plainHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if host[i] >= utf8.RuneSelf || host[i] == '%' {
			return false
		}
	}
	return true
}
