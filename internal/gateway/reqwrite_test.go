package gateway

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestWriteHeadAsRequestWrite: what writeHead sends is read by a server as
// the same request that http.Request.Write sends.
func TestWriteHeadAsRequestWrite(t *testing.T) {
	mk := func(method, url string, h http.Header, host string, close bool) *http.Request {
		r, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, vv := range h {
			r.Header[k] = vv
		}
		if host != "" {
			r.Host = host
		}
		r.Close = close
		return r
	}
	for i, r := range []*http.Request{
		mk("GET", "http://origin:8080/a/b?q=1&r=%20x", http.Header{"Accept": {"*/*"}, "X-Forwarded-For": {"192.0.2.1"}}, "site.example", false),
		mk("GET", "http://origin/", http.Header{"User-Agent": {""}, "Cookie": {"a=b", "c=d"}}, "", false),
		mk("HEAD", "http://origin/x", http.Header{"User-Agent": {"crawler/1.0"}, "Client-Cert": {":AAAA:"}}, "bots.example:8443", false),
		mk("DELETE", "http://origin/item/7", nil, "", true),
		mk("POST", "http://origin/logout", http.Header{"Content-Type": {"text/plain"}}, "", false),
		mk("OPTIONS", "http://origin/", http.Header{"Forwarded": {`for="[2001:db8::1]:443";proto=https`}, "Val": {"  padded  "}}, "", false),
	} {
		var want, got bytes.Buffer
		if err := r.Write(&want); err != nil {
			t.Fatal(err)
		}
		bw := bufio.NewWriter(&got)
		if err := writeHead(bw, r); err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		bw.Flush()
		a, err := http.ReadRequest(bufio.NewReader(&want))
		if err != nil {
			t.Fatal(err)
		}
		b, err := http.ReadRequest(bufio.NewReader(&got))
		if err != nil {
			t.Fatalf("%d: %v\n%s", i, err, got.String())
		}
		if a.Method != b.Method || a.RequestURI != b.RequestURI || a.Host != b.Host || a.Close != b.Close ||
			a.ContentLength != b.ContentLength || !reflect.DeepEqual(a.Header, b.Header) {
			t.Errorf("%d: Request.Write:\n%s\nwriteHead:\n%s", i, want.String(), got.String())
		}
	}
}

// TestWriteHeadRefuses: nothing that would split the request or forge a
// field is written.
func TestWriteHeadRefuses(t *testing.T) {
	for name, f := range map[string]func(r *http.Request){
		"value with CRLF": func(r *http.Request) { r.Header["X"] = []string{"a\r\nEvil: 1"} },
		"name with space": func(r *http.Request) { r.Header["Bad Name"] = []string{"1"} },
		"host with CRLF":  func(r *http.Request) { r.Host = "site\r\nEvil: 1" },
		"UA with newline": func(r *http.Request) { r.Header["User-Agent"] = []string{"a\nb"} },
		"method":          func(r *http.Request) { r.Method = "GET /x HTTP/1.1\r\n" },
	} {
		r, _ := http.NewRequest("GET", "http://origin/", nil)
		f(r)
		var got bytes.Buffer
		bw := bufio.NewWriter(&got)
		if err := writeHead(bw, r); err == nil {
			bw.Flush()
			t.Errorf("%s: written:\n%s", name, got.String())
		} else if strings.Contains(got.String(), "Evil") {
			t.Errorf("%s: refused, but after writing it", name)
		}
	}
}
