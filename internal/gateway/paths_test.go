package gateway

// The gateway reaches a plain-HTTP origin three ways: the fast way (its
// own proxying and the direct connection pool), the ReverseProxy over the
// direct pool, and the ReverseProxy over http.Transport (requests with a
// body, https origins). What the client and the log see must not depend
// on the way taken: each test here runs every case over all three.

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/testutil"
)

// originPaths are the ways to the origin, by name.
var originPaths = []string{"fast", "proxy-direct", "proxy-transport"}

// frontFor starts a gateway to upstream taking the named way, behind an
// HTTP/1.1 front server, and returns the front's URL and the gateway's log.
func frontFor(t *testing.T, path, upstream string, cfg Config) (string, *testutil.Buffer) {
	t.Helper()
	var logs testutil.Buffer
	cfg.Upstream = upstream
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.ConnOf = func(*http.Request) *auth.Conn { return nil }
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := h.(*gateway)
	switch path {
	case "fast":
		if !g.fast {
			t.Fatalf("%s: the fast way is off for %q", path, upstream)
		}
	case "proxy-direct":
		g.fast = false
	case "proxy-transport":
		g.fast = false
		g.proxy.Transport = timed{g.direct.fallback}
	default:
		t.Fatalf("no way %q", path)
	}
	front := httptest.NewServer(h)
	t.Cleanup(front.Close)
	t.Cleanup(g.direct.CloseIdle)
	t.Cleanup(g.direct.closeOther)
	return front.URL, &logs
}

// scriptedOrigin answers each request with answer, by hand, after
// reading the request's header.
func scriptedOrigin(t *testing.T, answer func(c net.Conn)) string {
	t.Helper()
	return "http://" + rawOrigin(t, func(c net.Conn) {
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		answer(c)
	})
}

// TestOriginHeaderTooLarge: an origin's response header larger than
// http.Transport's limit (10 MiB) is a 502 whichever way the request
// took, not forwarded.
func TestOriginHeaderTooLarge(t *testing.T) {
	up := scriptedOrigin(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 11<<20)+"\r\nContent-Length: 2\r\n\r\nok")
		// Until the gateway hangs up.
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
	})
	for _, path := range originPaths {
		t.Run(path, func(t *testing.T) {
			front, logs := frontFor(t, path, up, Config{})
			// A client that takes larger headers than the gateway.
			cl := &http.Client{Transport: &http.Transport{MaxResponseHeaderBytes: 64 << 20}}
			defer cl.CloseIdleConnections()
			resp, err := cl.Get(front + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("%s: status %d, want 502 (header of %d bytes forwarded)", path, resp.StatusCode, len(resp.Header.Get("X-Big")))
			}
			if !strings.Contains(logs.String(), "exceeded") {
				t.Errorf("%s: log does not say the header was too large:\n%s", path, logs.String())
			}
		})
	}
}
