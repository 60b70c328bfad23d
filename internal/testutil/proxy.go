package testutil

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
)

// ConnectProxy is an HTTP CONNECT proxy for tests: it resolves the names in
// Hosts (to loopback addresses), tunnels, and records each tunnel's target.
type ConnectProxy struct {
	Hosts map[string]string

	mu      sync.Mutex
	tunnels []string
}

// Tunnels returns the targets of the tunnels made so far.
func (cp *ConnectProxy) Tunnels() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.tunnels...)
}

func (cp *ConnectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
		return
	}
	host, port, _ := net.SplitHostPort(r.Host)
	if a, ok := cp.Hosts[host]; ok {
		host = a
	}
	up, err := net.Dial("tcp", net.JoinHostPort(host, port))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	cp.mu.Lock()
	cp.tunnels = append(cp.tunnels, r.Host)
	cp.mu.Unlock()
	c, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		up.Close()
		return
	}
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() { io.Copy(up, brw); up.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, up)
	c.Close()
	up.Close()
}

// StartConnectProxy serves a ConnectProxy on a loopback port until the
// test ends, and returns it with its URL.
func StartConnectProxy(t testing.TB, hosts map[string]string) (*ConnectProxy, *url.URL) {
	t.Helper()
	cp := &ConnectProxy{Hosts: hosts}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: cp}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return cp, &url.URL{Scheme: "http", Host: ln.Addr().String()}
}
