package gateway

// The gateway reaches a plain-HTTP origin three ways: the fast way (its
// own proxying and the direct connection pool), the ReverseProxy over the
// direct pool, and the ReverseProxy over http.Transport (requests with a
// body, https origins). What the client and the log see must not depend
// on the way taken: each test here runs every case over all three.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
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
	f := startFront(t, path, upstream, cfg)
	return f.url, f.logs
}

// front is a gateway behind an HTTP/1.1 server.
type front struct {
	url  string
	logs *testutil.Buffer
	// served receives a value as each request's handler returns
	// (or panics).
	served chan struct{}
}

func startFront(t *testing.T, path, upstream string, cfg Config) *front {
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
	f := &front{logs: &logs, served: make(chan struct{}, 64)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { f.served <- struct{}{} }()
		h.ServeHTTP(w, r)
	}))
	f.url = srv.URL
	t.Cleanup(srv.Close)
	t.Cleanup(g.direct.CloseIdle)
	t.Cleanup(g.direct.closeOther)
	return f
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

// TestOriginPathsAlike: what the client gets and what is logged is the
// same whichever way a request took to the origin, for each way an
// origin can answer out of the ordinary.
func TestOriginPathsAlike(t *testing.T) {
	// hold keeps an origin's connection open until the gateway closes
	// it (or the test ends).
	hold := func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, c)
	}
	cases := []struct {
		name   string
		answer func(c net.Conn)
		// run makes the client's request and checks what it got.
		run func(t *testing.T, f *front)
		// notLogged must not be in the gateway's log.
		notLogged string
	}{{
		// The header timeout strikes in the middle of a field's name.
		name: "HeaderCutByTimeout",
		answer: func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Ha")
			hold(c)
		},
		run: func(t *testing.T, f *front) {
			resp, err := http.Get(f.url + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Errorf("status %d, want 504", resp.StatusCode)
			}
		},
	}, {
		// The client goes away in the middle of the body: no origin
		// read error.
		name: "ClientCancelsMidBody",
		answer: func(c net.Conn) {
			// (A body of unknown length: each part is forwarded
			// at once.)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nfirst part\r\n")
			hold(c)
		},
		run: func(t *testing.T, f *front) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, len("first part"))); err != nil {
				t.Fatal(err)
			}
			cancel()
			resp.Body.Close()
			<-f.served
		},
		notLogged: "read error",
	}, {
		// Six informational answers, then the answer: all of them
		// reach the client.
		name: "SixEarlyHints",
		answer: func(c net.Conn) {
			for i := range 6 {
				fmt.Fprintf(c, "HTTP/1.1 103 Early Hints\r\nLink: </%d.css>; rel=preload\r\n\r\n", i)
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			hold(c)
		},
		run: func(t *testing.T, f *front) {
			var hints []string
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
					return nil
				}})
			req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Errorf("got %d %q, want 200 \"ok\"", resp.StatusCode, body)
			}
			want := "103 </0.css>; rel=preload,103 </1.css>; rel=preload,103 </2.css>; rel=preload," +
				"103 </3.css>; rel=preload,103 </4.css>; rel=preload,103 </5.css>; rel=preload"
			if got := strings.Join(hints, ","); got != want {
				t.Errorf("informational answers:\n got %s\nwant %s", got, want)
			}
		},
	}}
	for _, c := range cases {
		up := scriptedOrigin(t, c.answer)
		for _, path := range originPaths {
			t.Run(c.name+"/"+path, func(t *testing.T) {
				f := startFront(t, path, up, Config{ResponseHeaderTimeout: 300 * time.Millisecond})
				c.run(t, f)
				if c.notLogged != "" && strings.Contains(f.logs.String(), c.notLogged) {
					t.Errorf("logged %q:\n%s", c.notLogged, f.logs.String())
				}
			})
		}
	}
}
