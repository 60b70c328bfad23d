package gateway

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"testing"
)

// sameAsWrite fails t when writeRequest and Request.Write write r
// differently, or one fails where the other does not.
func sameAsWrite(t *testing.T, r *http.Request) {
	t.Helper()
	var want, got bytes.Buffer
	wbw, gbw := bufio.NewWriter(&want), bufio.NewWriter(&got)
	werr := r.Write(wbw)
	wbw.Flush()
	gerr := writeRequest(gbw, r)
	gbw.Flush()
	if (werr == nil) != (gerr == nil) || got.String() != want.String() {
		t.Errorf("%s %q (Host %q):\nRequest.Write: %q, %v\nwriteRequest:  %q, %v", r.Method, r.URL, r.Host, want.String(), werr, got.String(), gerr)
	}
}

// TestWriteRequestSameAsWrite: the request line and fields, byte for
// byte what Request.Write writes, for the fast way's requests and for the
// kinds it hands to Request.Write.
func TestWriteRequestSameAsWrite(t *testing.T) {
	base := func(method, target string) *http.Request {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Request{Method: method, URL: u, Header: http.Header{}, Host: u.Host}
	}
	with := func(r *http.Request, f func(*http.Request)) *http.Request { f(r); return r }
	trace := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{WroteHeaderField: func(string, []string) {}})
	got1xx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: nil})
	for _, r := range []*http.Request{
		base("GET", "http://origin.test/"),
		base("", "http://origin.test/a/b?q=1&r=%20"),
		base("HEAD", "http://origin.test:8080/x"),
		base("POST", "http://origin.test/form"),
		base("PUT", "http://origin.test/"),
		base("PATCH", "http://origin.test/"),
		base("DELETE", "http://origin.test/"),
		base("OPTIONS", "http://origin.test/"),
		base("post", "http://origin.test/"),
		base("GET", "http://origin.test/%2Fescaped%20path"),
		base("GET", "http://[::1]:80/"),
		with(base("GET", "http://origin.test/"), func(r *http.Request) {
			r.Header = http.Header{
				"Accept":          {"*/*"},
				"X-Many":          {"one", "two", "three"},
				"X-Empty":         {""},
				"X-Nil":           nil,
				"X-Spaces":        {"  padded \t"},
				"X-Breaks":        {"a\r\nb\nc\rd", "\r\n"},
				"Bad Name":        {"dropped"},
				"Host":            {"ignored.test"},
				"Content-Length":  {"12"},
				"Trailer":         {"X"},
				"non-canonical":   {"kept"},
				"X-Invalid-Utf8":  {"\xff\xfe"},
				"X-Forwarded-For": {"192.0.2.1"},
			}
		}),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.Header["User-Agent"] = []string{""} }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.Header["User-Agent"] = []string{" bot/1.0\r\n", "second"} }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.Header["User-Agent"] = nil }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.Host = "" }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.Host = "bad host\r\n" }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.Host = "bücher.test" }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.Host = "[fe80::1%25eth0]:80" }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.URL.Path = "/ctl\x01" }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.URL.RawQuery = "a=\x7f" }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.Close = true }),
		with(base("POST", "http://origin.test/"), func(r *http.Request) { r.ContentLength = 3; r.Body = http.NoBody }),
		with(base("POST", "http://origin.test/"), func(r *http.Request) { r.Body = http.NoBody }),
		with(base("POST", "http://origin.test/"), func(r *http.Request) { r.TransferEncoding = []string{"identity"} }),
		with(base("DELETE", "http://origin.test/"), func(r *http.Request) { r.TransferEncoding = []string{"identity"} }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { r.Trailer = http.Header{"X-T": nil} }),
		with(base("CONNECT", "http://origin.test/"), func(r *http.Request) { r.URL.Path = "" }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { *r = *r.WithContext(trace) }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) { *r = *r.WithContext(got1xx) }),
		with(base("GET", "http://origin.test/"), func(r *http.Request) {
			for i := range 100 {
				r.Header["X-Field-"+strings.Repeat("a", i%7)+string(rune('a'+i%26))] = []string{"v"}
			}
		}),
	} {
		sameAsWrite(t, r)
	}
}

// FuzzWriteRequest: whatever the method, target, host and fields,
// writeRequest writes what Request.Write writes.
func FuzzWriteRequest(f *testing.F) {
	f.Add("GET", "/a?b=c", "origin.test", "X-A", "v", "User-Agent", "bot", false)
	f.Add("POST", "/", "", "Bad Name", "a\r\nb", "X-B", " ", true)
	f.Add("", "*", "bücher.test:80", "Host", "x", "Trailer", "y", false)
	f.Fuzz(func(t *testing.T, method, target, host, k1, v1, k2, v2 string, noBody bool) {
		u, err := url.Parse(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: method, URL: u, Host: host, Header: http.Header{k1: {v1}, k2: {v2, v1}}}
		if noBody {
			r.Body = http.NoBody
		}
		sameAsWrite(t, r)
	})
}
