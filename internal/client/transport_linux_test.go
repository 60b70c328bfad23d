package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testpki"
)

// unansweredAddr returns a loopback address where connecting hangs: a
// socket listening with a backlog of 0 that accepts nothing, its queue
// filled, so that Linux drops the SYNs that follow.
func unansweredAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 10 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s: connections still complete with its queue full", addr)
	return ""
}

// TestPlainHTTPConnectTimeout: Timeout bounds connecting for http URLs as
// for https ones, to the site or to the proxy, and the error says so; the
// request's own deadline (10 s) is far later.
func TestPlainHTTPConnectTimeout(t *testing.T) {
	p := testpki.New(t)
	hole := unansweredAddr(t)
	for _, tc := range []struct {
		name, url string
		proxy     *url.URL
	}{
		{"direct", "http://" + hole + "/", nil},
		{"proxy", "http://127.0.0.1:9/", &url.URL{Scheme: "http", Host: hole}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p),
				Timeout: 300 * time.Millisecond, Proxy: http.ProxyURL(tc.proxy)}})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", tc.url, nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			var e *Error
			want := "connect to " + hole + ": timed out after 300ms"
			if tc.proxy != nil {
				want = "proxy http://" + hole + ": timed out after 300ms"
			}
			if !errors.As(err, &e) || e.Msg != want {
				t.Errorf("connecting to %s: %v, want %q", hole, err, want)
			}
		})
	}
}
