package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/testutil"
)

// sameOrigin answers by path, and records each request as it came (the
// wire form of the parsed request: method, target, every field).
type sameOrigin struct {
	mu   sync.Mutex
	seen []string
}

func (o *sameOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	dump, _ := httputil.DumpRequest(r, false)
	o.mu.Lock()
	// (The client's port differs from one connection to the next.)
	o.seen = append(o.seen, clientPort.ReplaceAllString(string(dump), "127.0.0.1:PORT"))
	o.mu.Unlock()
	flush := func() { http.NewResponseController(w).Flush() }
	switch strings.TrimPrefix(r.URL.Path, "/p") {
	case "/hop":
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "1")
		io.WriteString(w, "hop")
	case "/trailer":
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		flush()
		w.Header().Set("X-Sum", "42")
	case "/late-trailer":
		io.WriteString(w, "body")
		flush() // chunked, for a trailer it did not announce
		w.Header().Set(http.TrailerPrefix+"X-Late", "7")
	case "/sse":
		w.Header().Set("Content-Type", "Text/Event-Stream; charset=utf-8")
		w.WriteHeader(200)
		flush()
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			flush()
			time.Sleep(5 * time.Millisecond)
		}
	case "/unknown":
		for i := range 3 {
			fmt.Fprintf(w, "chunk %d;", i)
			flush()
		}
	case "/early":
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "after hints")
	case "/204":
		w.WriteHeader(http.StatusNoContent)
	case "/304":
		w.WriteHeader(http.StatusNotModified)
	case "/big":
		io.WriteString(w, strings.Repeat("b", 100<<10))
	case "/too-big":
		w.Header().Set("Content-Length", "5000")
		io.WriteString(w, strings.Repeat("t", 5000))
	case "/too-big-stream":
		for range 5 {
			io.WriteString(w, strings.Repeat("s", 1000))
			flush()
		}
	case "/slow":
		time.Sleep(600 * time.Millisecond)
	case "/hang-up":
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	default:
		w.Header().Set("X-Origin", "yes")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		io.WriteString(w, "hello "+r.Method)
	}
}

// since returns what the origin saw after its first n requests, and how
// many it saw in all.
func (o *sameOrigin) since(n int) (string, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.seen[n:], "----\n"), len(o.seen)
}

var clientPort = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

// answer is what a client got: status, fields (less Date), body, trailers,
// and the informational answers before.
type answer struct {
	status   int
	header   string
	body     string
	trailer  string
	err      string
	early    []int
	readFail bool
}

func fieldsText(h http.Header, skip ...string) string {
	var lines []string
	for k, vv := range h {
		if slices.Contains(skip, k) {
			continue
		}
		v := slices.Clone(vv)
		if k == "Trailer" {
			// (The announced names come in map order.)
			var names []string
			for _, x := range v {
				for n := range strings.SplitSeq(x, ",") {
					names = append(names, strings.TrimSpace(n))
				}
			}
			slices.Sort(names)
			v = []string{strings.Join(names, ", ")}
		}
		lines = append(lines, k+": "+strings.Join(v, " | "))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestFastSameAsReverseProxy: a request through the fast way reaches the
// origin exactly as through httputil.ReverseProxy, and the client gets the
// same answer, over HTTP/1.1 and HTTP/2, for requests it takes and those it
// leaves to the ReverseProxy.
func TestFastSameAsReverseProxy(t *testing.T) {
	o := &sameOrigin{}
	up := httptest.NewServer(o)
	defer up.Close()
	logs := &testutil.Buffer{}
	mk := func(fast bool) http.Handler {
		h, err := New(Config{Upstream: up.URL, MaxResponseBody: 3000, ResponseHeaderTimeout: 300 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(logs, nil)), ConnOf: func(*http.Request) *auth.Conn { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		h.(*gateway).fast = fast
		return h
	}
	type front struct {
		name string
		srv  *httptest.Server
	}
	var fronts [2][2]front // [h1, h2][reverse proxy, fast]
	for i, fast := range []bool{false, true} {
		h1 := httptest.NewServer(mk(fast))
		defer h1.Close()
		h2 := httptest.NewUnstartedServer(mk(fast))
		h2.EnableHTTP2 = true
		h2.StartTLS()
		defer h2.Close()
		fronts[0][i] = front{"HTTP/1.1", h1}
		fronts[1][i] = front{"HTTP/2", h2}
	}

	type req struct {
		method, target string
		fields         []string // "Name: value", as sent
		fast           bool     // whether the fast way takes it
	}
	reqs := []req{
		{"GET", "/plain?a=1&b=two", []string{"X-A: 1", "X-A: 2", "Accept: */*", "User-Agent: bot/1"}, true},
		{"GET", "/plain", []string{"Connection: keep-alive, X-Listed", "X-Listed: gone", "Keep-Alive: 300", "Proxy-Connection: keep-alive",
			"Proxy-Authorization: Basic eA==", "X-Kept: here"}, true},
		{"GET", "/plain", []string{"Forwarded: for=1.2.3.4", "X-Forwarded-For: 1.2.3.4", "X-Forwarded-Host: evil", "X-Forwarded-Proto: http",
			"Client-Cert: :AAAA:", "X_Client_Cert: x", "Req-Mtls-Cert-Status: valid", "Web-Bot-Auth-Status: verified", "X-Real-IP: 9.9.9.9"}, true},
		{"GET", "/plain", []string{"Connection: Client-Cert, User-Agent", "User-Agent: listed"}, true},
		{"GET", "/p%2Fescaped/x?q=%41", nil, true},
		{"GET", "", nil, true},
		{"HEAD", "/plain", nil, true},
		{"DELETE", "/plain", nil, true},
		{"OPTIONS", "/plain", nil, true},
		{"POST", "/plain", []string{"Content-Length: 0"}, true},
		{"GET", "/hop", nil, true},
		{"GET", "/trailer", nil, true},
		{"GET", "/late-trailer", nil, true},
		{"GET", "/sse", nil, true},
		{"GET", "/unknown", nil, true},
		{"GET", "/early", nil, true},
		{"GET", "/204", nil, true},
		{"GET", "/304", []string{"If-None-Match: \"x\""}, true},
		{"GET", "/big", nil, true},
		{"GET", "/too-big", nil, true},
		{"GET", "/too-big-stream", nil, true},
		{"GET", "/slow", nil, true},
		{"GET", "/hang-up", nil, true},
		{"GET", "/plain", manyListed(40), true},
		{"GET", "/plain?" + strings.Repeat("a=1&", maxQueryParams-1) + "a=1", nil, true},
		{"GET", "/plain?" + strings.Repeat("a=1&", maxQueryParams) + "a=1", nil, false},
		{"GET", "/plain?a=1;b=2", nil, false},
		{"GET", "/plain?bad=%zz", nil, false},
		{"GET", "/plain", []string{"Te: trailers"}, false},
		{"GET", "/plain", []string{"Upgrade: h2c", "Connection: Upgrade"}, false},
		{"POST", "/plain", []string{"Content-Length: 4"}, false},
	}
	for _, proto := range []int{0, 1} {
		for _, rq := range reqs {
			if proto == 1 && (rq.target == "" || strings.Contains(strings.Join(rq.fields, "\n"), "Connection") ||
				strings.Contains(strings.Join(rq.fields, "\n"), "Upgrade") || strings.Contains(strings.Join(rq.fields, "\n"), "Te:")) {
				continue // not HTTP/2 fields
			}
			var got [2]answer
			var seen [2]string
			for i := range 2 {
				f := fronts[proto][i]
				_, before := o.since(0)
				got[i] = send(t, f.srv, proto == 1, rq.method, rq.target, rq.fields)
				seen[i], _ = o.since(before)
			}
			name := fmt.Sprintf("%s %s %s %q", fronts[proto][0].name, rq.method, rq.target, rq.fields)
			if seen[0] != seen[1] {
				t.Errorf("%s: the origin saw, through the ReverseProxy:\n%s\nthe fast way:\n%s", name, seen[0], seen[1])
			}
			if fmt.Sprint(got[0]) != fmt.Sprint(got[1]) {
				t.Errorf("%s: the client got, through the ReverseProxy:\n%+v\nthe fast way:\n%+v", name, got[0], got[1])
			}
			r := httptest.NewRequest(rq.method, "http://site.example"+cmpTarget(rq.target), nil)
			for _, fl := range rq.fields {
				k, v, _ := strings.Cut(fl, ": ")
				r.Header.Add(k, v)
			}
			if strings.Contains(strings.Join(rq.fields, "\n"), "Content-Length: 4") {
				r.ContentLength = 4
			}
			if fastRequest(r) != rq.fast {
				t.Errorf("%s: fastRequest = %v, want %v", name, !rq.fast, rq.fast)
			}
		}
	}
}

// manyListed is a Connection field listing n fields, those fields, and as
// many that it does not list.
func manyListed(n int) []string {
	var names []string
	fields := []string{}
	for i := range n {
		names = append(names, fmt.Sprintf("X-Listed-%d", i))
		fields = append(fields, fmt.Sprintf("X-Listed-%d: %d", i, i), fmt.Sprintf("X-Kept-%d: %d", i, i))
	}
	return append([]string{"Connection: " + strings.Join(names, ", ")}, fields...)
}

func cmpTarget(t string) string {
	if t == "" {
		return "/"
	}
	return t
}

// send makes one request on a new connection: raw HTTP/1.1 (fields as
// given, the target as given), or HTTP/2 through Go's client.
func send(t *testing.T, srv *httptest.Server, h2 bool, method, target string, fields []string) answer {
	t.Helper()
	var a answer
	if h2 {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs},
			Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true)
		defer tr.CloseIdleConnections()
		var body io.Reader
		if slices.Contains(fields, "Content-Length: 4") {
			body = strings.NewReader("body")
		}
		r, _ := http.NewRequest(method, srv.URL+cmpTarget(target), body)
		for _, f := range fields {
			k, v, _ := strings.Cut(f, ": ")
			if k != "Content-Length" {
				r.Header.Add(k, v)
			}
		}
		if _, ok := r.Header["User-Agent"]; !ok {
			r.Header["User-Agent"] = nil // no Go default
		}
		resp, err := tr.RoundTrip(r)
		if err != nil {
			a.err = err.Error()
			return a
		}
		return readAnswer(resp, a)
	}
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	head := method + " " + cmpTarget(target) + " HTTP/1.1\r\nHost: site.example\r\n"
	if target == "" {
		head = method + " http://site.example HTTP/1.1\r\nHost: site.example\r\n"
	}
	for _, f := range fields {
		head += f + "\r\n"
	}
	head += "\r\n"
	if slices.Contains(fields, "Content-Length: 4") {
		head += "body"
	}
	io.WriteString(c, head)
	br := bufio.NewReader(c)
	r := &http.Request{Method: method}
	for {
		resp, err := http.ReadResponse(br, r)
		if err != nil {
			a.err = "no answer: " + err.Error()
			return a
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			a.early = append(a.early, resp.StatusCode)
			continue
		}
		return readAnswer(resp, a)
	}
}

func readAnswer(resp *http.Response, a answer) answer {
	defer resp.Body.Close()
	a.status = resp.StatusCode
	a.header = fieldsText(resp.Header, "Date", "Content-Length")
	if resp.ContentLength >= 0 {
		a.header += fmt.Sprintf("\nlength %d", resp.ContentLength)
	}
	b, err := io.ReadAll(resp.Body)
	a.body = string(b)
	a.readFail = err != nil
	a.trailer = fieldsText(resp.Trailer)
	return a
}

// TestFastStreamsHeaderFirst: an event stream's header, and that of a body
// of unknown length, reaches the client before the origin has sent any of
// the body, both ways.
func TestFastStreamsHeaderFirst(t *testing.T) {
	for _, ct := range []string{"text/event-stream", ""} {
		for _, fast := range []bool{false, true} {
			release := make(chan struct{})
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if ct != "" {
					w.Header().Set("Content-Type", ct)
				}
				w.WriteHeader(200)
				http.NewResponseController(w).Flush()
				<-release
				io.WriteString(w, "data: late\n\n")
			}))
			h, err := New(Config{Upstream: up.URL, ConnOf: func(*http.Request) *auth.Conn { return nil }})
			if err != nil {
				t.Fatal(err)
			}
			h.(*gateway).fast = fast
			front := httptest.NewServer(h)
			got := make(chan error, 1)
			go func() {
				resp, err := http.Get(front.URL + "/stream")
				if err == nil {
					resp.Body.Close()
				}
				got <- err
			}()
			select {
			case err := <-got:
				if err != nil {
					t.Errorf("%q, fast %v: %v", ct, fast, err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("%q, fast %v: no header while the origin held the body", ct, fast)
			}
			close(release)
			front.Close()
			up.Close()
		}
	}
}
