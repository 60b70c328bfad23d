package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/testutil"
)

// TestPlainHTTPGets400: plain HTTP on the TLS port, through the server's
// own listener, is answered with a 400 (as net/http's TLS listener does);
// other plaintext is not answered with HTTP.
func TestPlainHTTPGets400(t *testing.T) {
	p := testpki.New(t)
	ts := startServer(t, p, Config{})
	for _, tc := range []struct {
		name, send string
		want400    bool
	}{
		{"GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"HEAD", "HEAD /debug HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"POST", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", true},
		{"NotHTTP", "hello there\r\n\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ts.url.Host)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second)) // only keeps a broken build from hanging
			io.WriteString(c, tc.send)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if !tc.want400 {
				if err == nil {
					t.Fatalf("got an HTTP answer %q to non-HTTP input", resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("no HTTP answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 400 || !strings.Contains(string(body), "HTTP request to an HTTPS server") {
				t.Fatalf("answer %s %q, want 400", resp.Status, body)
			}
		})
	}
}

// TestShutdownClosesHandshakes: Shutdown closes connections still in their
// handshake (here, silent ones under a one-hour handshake timeout) and
// returns once their goroutines are gone.
func TestShutdownClosesHandshakes(t *testing.T) {
	p := testpki.New(t)
	s, err := New(Config{Files: Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA}, HandshakeTimeout: time.Hour,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// One with half a record header, so the inspection is mid-read.
	conns[0].Write([]byte{0x16, 3, 1})
	waitFor(t, "the handshakes to start", func() bool {
		s.listenersMu.Lock()
		defer s.listenersMu.Unlock()
		if len(s.listeners) == 0 {
			return false
		}
		hl := s.listeners[0]
		hl.mu.Lock()
		defer hl.mu.Unlock()
		return len(hl.handshakes) == 5
	})
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(20 * time.Second)) // only keeps a broken build from hanging
		if n, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
			t.Errorf("connection %d still open after Shutdown: read %d, %v", i, n, err)
		}
	}
	s.listenersMu.Lock()
	defer s.listenersMu.Unlock()
	if n := len(s.listeners[0].handshakes); n != 0 {
		t.Errorf("%d handshakes left after Shutdown", n)
	}
}

// TestLogs: the debug line of each handshake (server -v), and tls_flags as
// an array of numbers in JSON logs.
func TestLogs(t *testing.T) {
	p := testpki.New(t)
	ts := startServer(t, p, Config{})
	fetch(t, ts, p, withCert(p, "valid", 80), "/debug")
	waitFor(t, "the handshake line", func() bool {
		return strings.Contains(ts.logs.String(), `level=DEBUG msg=handshake`)
	})
	line := ts.logs.String()
	for _, want := range []string{"tls_flags=[80]", "version=\"TLS 1.3\"", "alpn=h2", "resumed=false", "cert_requested=true", "cert=client.example", "store=client", "validated=true"} {
		if !strings.Contains(line, want) {
			t.Errorf("handshake line lacks %s:\n%s", want, line)
		}
	}

	logs := &testutil.Buffer{}
	s, err := New(Config{Policy: PolicyRequire, Files: Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA},
		Logger: slog.New(slog.NewJSONHandler(logs, nil)), Now: func() time.Time { return testpki.Now }})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	js := &testServer{Server: s, url: ts.url, logs: logs}
	u := *ts.url
	u.Host = ln.Addr().String()
	js.url = &u
	if o := fetch(t, js, p, client.Config{Time: testpki.Clock, Flags: withCert(p, "", 80).Flags}, "/debug"); o.err == nil {
		t.Fatal("flagged client without a certificate served under require")
	}
	waitFor(t, "the failure line", func() bool { return strings.Contains(logs.String(), `"msg":"tls handshake failed"`) })
	if !strings.Contains(logs.String(), `"tls_flags":[80]`) {
		t.Errorf("JSON log lacks \"tls_flags\":[80]:\n%s", logs)
	}
}
