package forward

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzConnect sends the proxy a CONNECT whose target and Host field are
// arbitrary, over a real connection to a real http.Server. Whatever the
// proxy answers is one well-formed response; it opens a tunnel (200) only
// for a target of the form host:port with a port number, and flags (asks
// FlagHost about) exactly that host; its refusals print the target escaped.
func FuzzConnect(f *testing.F) {
	ca, _, err := LoadOrCreateCA(f.TempDir(), func(string, ...any) {})
	if err != nil {
		f.Fatal(err)
	}
	asked := make(chan string, 16)
	p := New(Config{
		CA: ca,
		FlagHost: func(host string) bool {
			asked <- host
			return true
		},
		Asked:            func(string) (bool, bool, bool) { return false, false, false },
		Explain:          func(error) (int, string) { return http.StatusBadGateway, "no upstream here" },
		HandshakeTimeout: 5 * time.Second,
		Log:              slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	// Only CONNECT reaches the proxy: a request line the fuzzer splits in
	// two never sends the proxy anywhere.
	// Each input is one connection, checked once the server is done with
	// it: closed, or hijacked and its tunnel ended.
	connDone := make(chan struct{}, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "not CONNECT", http.StatusTeapot)
			return
		}
		hw := &hijackNoted{ResponseWriter: w}
		p.ServeHTTP(hw, r)
		if hw.hijacked {
			connDone <- struct{}{}
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			connDone <- struct{}{}
		}
	}
	srv.Config.ErrorLog = slog.NewLogLogger(slog.NewTextHandler(io.Discard, nil), slog.LevelError)
	srv.Start()
	f.Cleanup(srv.Close)

	for _, s := range [][2]string{
		{"example.com:443", "example.com:443"},
		{"example.com:443", ""},
		{"[::1]:8443", "[::1]:8443"},
		{"127.0.0.1:443", "127.0.0.1:443"},
		{"example.com", "example.com"},
		{"example.com:", "example.com:"},
		{":443", ":443"},
		{"example.com:https", "example.com:https"},
		{"example.com:99999", "example.com:99999"},
		{"example.com:0443", "example.com:0443"},
		{"exa\x00mple.com:443", "exa\x00mple.com:443"},
		{"https://example.com/", "example.com"},
		{"/path", "example.com:443"},
		{"example.com:443", "other.example:443"},
		{"[::1%25eth0]:443", "[::1%25eth0]:443"},
		{"a:1:2", "a:1:2"},
		{"example.com:0", "example.com:0"},
		{"example.com:65536", "example.com:65536"},
		{"", "example.com:443"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, target, host string) {
		defer func() {
			// Drained either way: the next input starts with none.
			select {
			case got := <-asked:
				if !t.Failed() {
					t.Errorf("CONNECT %q, Host %q: FlagHost asked about %q, for no tunnel", target, host, got)
				}
			default:
			}
		}()
		head := "CONNECT " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			c.Close()
			select {
			case <-connDone:
			case <-time.After(10 * time.Second):
				t.Fatalf("%q: the server still holds the connection 10 s after it closed", head)
			}
		}()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, head); err != nil {
			return // the server closed first: nothing to check
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return // closed without an answer: net/http's choice, before the proxy
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			// Refusals quote the target: no control character of it
			// reaches the client raw.
			if i := bytes.IndexFunc(bytes.TrimSuffix(body, []byte("\n")), func(r rune) bool { return r < 0x20 || r == 0x7f }); i >= 0 {
				t.Fatalf("%q: refusal %d carries a raw control character: %q", head, resp.StatusCode, body)
			}
			return
		}
		// A tunnel: the request as net/http reads it had an authority of
		// host:port, port a number, and that host is the one flagged.
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatalf("%q: tunnel opened for a request net/http does not read: %v", head, err)
		}
		h, port, err := net.SplitHostPort(req.Host)
		if err != nil || h == "" {
			t.Fatalf("%q: tunnel opened to %q, not host:port", head, req.Host)
		}
		// RFC 9110, Section 9.3.6: authority-form, whose port is digits
		// (RFC 3986, Section 3.2.3), here a TCP port.
		if n, err := strconv.Atoi(port); strings.Trim(port, "0123456789") != "" || err != nil || n < 1 || n > 65535 {
			t.Fatalf("%q: tunnel opened to port %q, not a port number", head, port)
		}
		// The tunnel goes where the request line says, never the Host field.
		if req.URL.Host != req.Host {
			t.Fatalf("%q: tunnel opened to %q, the Host field, not the request target %q", head, req.Host, req.URL.Host)
		}
		// The proxy asks once the client's first byte in the tunnel
		// opens a TLS record (ContentType 22), before the handshake
		// (which ends when the client closes).
		if _, err := c.Write([]byte{22}); err != nil {
			t.Fatalf("%q: tunnel to %q closed at once: %v", head, req.Host, err)
		}
		select {
		case got := <-asked:
			if got != h {
				t.Fatalf("%q: tunnel to %q, FlagHost asked about %q", head, req.Host, got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q: tunnel to %q, FlagHost never asked", head, req.Host)
		}
	})
}

// hijackNoted notes whether the handler took the connection.
type hijackNoted struct {
	http.ResponseWriter
	hijacked bool
}

func (w *hijackNoted) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}
