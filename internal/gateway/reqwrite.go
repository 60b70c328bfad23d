package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// writeHead writes a bodiless request's head as http.Request.Write would
// for the proxy's requests, without sorting the header fields (their order
// means nothing) and with http.Transport's checks on names and values. The
// proxy has removed hop-by-hop fields already.
func writeHead(bw *bufio.Writer, r *http.Request) error {
	host := r.Host
	if host == "" && r.URL != nil {
		host = r.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return errors.New("http: invalid Host header")
	}
	uri := r.URL.RequestURI()
	if strings.ContainsAny(uri, " \r\n") {
		return fmt.Errorf("net/http: can't write request URI %q", uri)
	}
	method := r.Method
	if method == "" {
		method = "GET"
	}
	if !validMethod(method) {
		return fmt.Errorf("net/http: invalid method %q", method)
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	// As Request.Write: Go's User-Agent when the field is absent, none
	// when it is present and empty.
	ua := "Go-http-client/1.1"
	if vv, ok := r.Header["User-Agent"]; ok {
		ua = ""
		if len(vv) > 0 {
			ua = vv[0]
		}
	}
	if ua != "" {
		if !httpguts.ValidHeaderFieldValue(ua) {
			return errors.New("net/http: invalid header field value for \"User-Agent\"")
		}
		bw.WriteString("User-Agent: ")
		bw.WriteString(ua)
		bw.WriteString("\r\n")
	}
	if r.Close && !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "close") {
		bw.WriteString("Connection: close\r\n")
	}
	if method == "POST" || method == "PUT" || method == "PATCH" {
		bw.WriteString("Content-Length: 0\r\n")
	}
	for k, vv := range r.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("net/http: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("net/http: invalid header field value for %q", k)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(strings.TrimSpace(v))
			bw.WriteString("\r\n")
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// validMethod reports whether m is an HTTP token.
func validMethod(m string) bool {
	return len(m) > 0 && strings.IndexFunc(m, func(r rune) bool { return !httpguts.IsTokenRune(r) }) < 0
}
