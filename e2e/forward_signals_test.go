package e2e

// The forward proxy as a process: what it does at SIGTERM and SIGHUP.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// proxyProc is a forward proxy process whose stderr the test reads.
type proxyProc struct {
	cmd        *exec.Cmd
	addr, root string
	out        lockedBuffer
	done       chan struct{} // closed when the process has exited
	err        error         // its exit, once done is closed
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProxyProc runs `client -listen` on a free loopback port with args,
// as startForwardProxy does, and returns once it is ready.
func startProxyProc(t *testing.T, args ...string) *proxyProc {
	t.Helper()
	p := &proxyProc{addr: freeAddr(t), done: make(chan struct{})}
	caDir := filepath.Join(t.TempDir(), "ca")
	p.root = filepath.Join(caDir, "ca.crt")
	p.cmd = exec.Command(filepath.Join(binDir, "client"), append([]string{"-listen", p.addr, "-mitm-ca", caDir}, args...)...)
	p.cmd.Env = append(p.cmd.Environ(), "HTTPS_PROXY=http://127.0.0.1:1", "HTTP_PROXY=http://127.0.0.1:1", "NO_PROXY=")
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done })
	if !p.waitLog(spkiLine) {
		t.Fatalf("the proxy did not start: %v\n%s", p.err, p.out.String())
	}
	return p
}

// waitLog waits until the proxy's stderr matches re, and reports whether
// it did; false when the process exited first or 20 s went by.
func (p *proxyProc) waitLog(re *regexp.Regexp) bool {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if re.MatchString(p.out.String()) {
			return true
		}
		select {
		case <-p.done:
			return re.MatchString(p.out.String())
		default:
		}
	}
	return false
}

// exited waits up to 20 s for the process to exit and returns its exit
// error; ok is false if it is still running.
func (p *proxyProc) exited() (err error, ok bool) {
	select {
	case <-p.done:
		return p.err, true
	case <-time.After(20 * time.Second):
		return nil, false
	}
}

// holdingOrigin is a plain HTTP origin on loopback whose handler says
// when a request came in and answers it when released.
func holdingOrigin(t *testing.T) (addr string, got <-chan struct{}, release chan<- struct{}) {
	t.Helper()
	gotc, rel := make(chan struct{}, 16), make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotc <- struct{}{}
		<-rel
		io.WriteString(w, "finished after the signal\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), gotc, rel
}

var shuttingDown = regexp.MustCompile(`msg="shutting down"`)

// TestForwardProxySIGTERMWaits: at SIGTERM the forward proxy process lets
// a request in flight finish, writes its log line, and exits 0, as the
// server does; it does not exit with the request cut.
func TestForwardProxySIGTERMWaits(t *testing.T) {
	origin, got, release := holdingOrigin(t)
	p := startProxyProc(t)
	pu, _ := url.Parse("http://" + p.addr)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}, Timeout: 60 * time.Second}
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := c.Get("http://" + origin + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{resp.Status + " " + string(b), err}
	}()
	<-got
	// SIGHUP, with no -proxy-auth file to read, changes nothing.
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !p.waitLog(regexp.MustCompile(`msg="SIGHUP: no -proxy-auth file to read again"`)) {
		t.Errorf("SIGHUP: %v\n%s", p.err, p.out.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The origin answers once the proxy is shutting down, or has exited.
	p.waitLog(shuttingDown)
	close(release)
	r := <-res
	if r.err != nil || r.body != "200 OK finished after the signal\n" {
		t.Errorf("a request in flight at SIGTERM: %q, %v", r.body, r.err)
	}
	err, ok := p.exited()
	if !ok {
		t.Fatalf("the proxy did not exit after SIGTERM:\n%s", p.out.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	log := p.out.String()
	if err != nil || !strings.Contains(log, `msg=request method=GET url=http://`+origin+`/slow`) || !strings.Contains(log, "msg=stopped") {
		t.Errorf("exit %v; the request's line and msg=stopped should be logged:\n%s", err, log)
	}
}

// TestForwardProxySIGTERMDrainsTunnels: at SIGTERM requests in flight
// inside CONNECT tunnels (HTTP/1.1 and HTTP/2) finish and are logged, an
// idle tunnel is closed, and the process exits 0; open tunnels are not cut.
func TestForwardProxySIGTERMDrainsTunnels(t *testing.T) {
	gotc, rel := make(chan struct{}, 16), make(chan struct{})
	site := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			gotc <- struct{}{}
			<-rel
		}
		io.WriteString(w, "answered "+r.URL.Path+"\n")
	}))
	defer site.Close()
	siteRoot := filepath.Join(t.TempDir(), "site.crt")
	os.WriteFile(siteRoot, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: site.Certificate().Raw}), 0o600)
	target := strings.TrimPrefix(site.URL, "https://")
	p := startProxyProc(t, "-server-cacert", siteRoot)
	pool := x509.NewCertPool()
	data, err := os.ReadFile(p.root)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(data)

	// tunnel opens a CONNECT tunnel and TLS inside it.
	tunnel := func(protos ...string) (*tls.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(60 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("CONNECT %s: %v %v", target, resp, err)
		}
		if len(protos) == 0 {
			protos = []string{"http/1.1"}
		}
		tc := tls.Client(&bufConn{Conn: c, r: br}, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: protos})
		return tc, bufio.NewReader(tc)
	}
	get := func(tc *tls.Conn, br *bufio.Reader, path string) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+target+path, nil)
		if err := req.Write(tc); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.Status + " " + string(b), err
	}

	idle, idleBR := tunnel()
	if got, err := get(idle, idleBR, "/first"); err != nil || got != "200 OK answered /first\n" {
		t.Fatalf("first request in a tunnel: %q, %v", got, err)
	}
	busy, busyBR := tunnel()
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 2)
	go func() { b, err := get(busy, busyBR, "/slow"); res <- result{b, err} }()
	// And one over HTTP/2, as curl and browsers speak in a tunnel.
	h2tc, _ := tunnel("h2")
	if err := h2tc.Handshake(); err != nil || h2tc.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatalf("h2 in a tunnel: %v, %q", err, h2tc.ConnectionState().NegotiatedProtocol)
	}
	// x/net's client conn over a connection of the test's own: net/http's
	// NewClientConn dials for itself, which a tunnel cannot.
	//lint:ignore SA1019 the connection is the tunnel's, made by the test
	h2c, err := (&http2.Transport{}).NewClientConn(h2tc)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "https://"+target+"/slow", nil)
		resp, err := h2c.RoundTrip(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{resp.Status + " " + string(b), err}
	}()
	<-gotc
	<-gotc
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(shuttingDown)
	// The idle tunnel is closed at once, while the busy one is served.
	if _, err := idleBR.ReadByte(); err == nil {
		t.Errorf("the idle tunnel sent bytes after SIGTERM")
	}
	close(rel)
	for range 2 {
		if r := <-res; r.err != nil || r.body != "200 OK answered /slow\n" {
			t.Errorf("a request in flight in a tunnel at SIGTERM: %q, %v", r.body, r.err)
		}
	}
	err, ok := p.exited()
	if !ok {
		t.Fatalf("the proxy did not exit after SIGTERM:\n%s", p.out.String())
	}
	log := p.out.String()
	if err != nil || !strings.Contains(log, `msg=request method=GET url=https://`+target+`/slow`) || !strings.Contains(log, "msg=stopped") {
		t.Errorf("exit %v; the tunnel's request line and msg=stopped should be logged:\n%s", err, log)
	}
}

// bufConn reads what a bufio.Reader on the connection has buffered first.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// TestForwardProxyReloadsAuth: the -proxy-auth file is read again when it
// changes and at SIGHUP, which does not stop the proxy; a bad file keeps
// the last good credentials, and says so.
func TestForwardProxyReloadsAuth(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") }))
	defer origin.Close()
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	// replace writes the file anew and renames it over creds, as tools do.
	replace := func(content string) {
		t.Helper()
		if err := os.WriteFile(creds+".new", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(creds+".new", creds); err != nil {
			t.Fatal(err)
		}
	}
	replace("bot:one\n")
	p := startProxyProc(t, "-proxy-auth", creds)
	status := func(user string) int {
		t.Helper()
		pu, _ := url.Parse("http://" + user + "@" + p.addr)
		c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true}, Timeout: 30 * time.Second}
		resp, err := c.Get(origin.URL + "/")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// accepted polls until user gets through, for 20 s at most.
	accepted := func(user string) bool {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if status(user) == http.StatusOK {
				return true
			}
		}
		return false
	}
	if got := status("bot:one"); got != http.StatusOK {
		t.Fatalf("bot:one at start: %d", got)
	}

	replace("# rotated\nbot:two\n")
	if !accepted("bot:two") {
		t.Errorf("bot:two never accepted after the -proxy-auth file changed:\n%s", p.out.String())
	}
	if got := status("bot:one"); got != http.StatusProxyAuthRequired {
		t.Errorf("bot:one after the file changed: %d, want 407", got)
	}

	// A bad file at SIGHUP: the proxy keeps running on the last good one.
	replace("no colon here\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !p.waitLog(regexp.MustCompile(`level=ERROR msg="reload failed; keeping the last good credentials" trigger=(SIGHUP|"file change") err=.*line 1: want user:password`)) {
		t.Errorf("no reload failure logged for a bad file: %v\n%s", p.err, p.out.String())
	}
	if got := status("bot:two"); got != http.StatusOK {
		t.Errorf("bot:two after a bad file: %d, want 200 (exit: %v)", got, p.err)
	}
	replace("bot:three\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !accepted("bot:three") || !p.waitLog(regexp.MustCompile(`msg="proxy credentials reloaded" trigger=(SIGHUP|"file change") users=1`)) {
		t.Errorf("bot:three never accepted after SIGHUP: %v\n%s", p.err, p.out.String())
	}
	select {
	case <-p.done:
		t.Errorf("the proxy exited: %v\n%s", p.err, p.out.String())
	default:
	}
}

// connect opens a CONNECT tunnel to target through the proxy at addr and
// returns the connection, the reader over it, and the proxy's status.
func connect(t *testing.T, addr, target string) (net.Conn, *bufio.Reader, int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	return c, br, resp.StatusCode
}

// TestForwardProxyIdleTimeout: a client's connection to the proxy, and a
// tunnel, idle for -idle-timeout are closed by the proxy.
func TestForwardProxyIdleTimeout(t *testing.T) {
	site := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") }))
	defer site.Close()
	siteRoot := filepath.Join(t.TempDir(), "site.crt")
	os.WriteFile(siteRoot, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: site.Certificate().Raw}), 0o600)
	target := strings.TrimPrefix(site.URL, "https://")
	p := startProxyProc(t, "-server-cacert", siteRoot, "-idle-timeout", "200ms")

	// A keep-alive connection after an http:// request.
	origin := httptest.NewServer(site.Config.Handler)
	defer origin.Close()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	req, _ := http.NewRequest(http.MethodGet, origin.URL+"/", nil)
	req.WriteProxy(c)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("http:// through the proxy: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("an idle client connection: %v, want it closed (EOF)", err)
	}

	// A tunnel after one request.
	tc, tbr, status := connect(t, p.addr, target)
	if status != http.StatusOK {
		t.Fatalf("CONNECT: %d", status)
	}
	pool := x509.NewCertPool()
	data, _ := os.ReadFile(p.root)
	pool.AppendCertsFromPEM(data)
	tls := tls.Client(&bufConn{Conn: tc, r: tbr}, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	req, _ = http.NewRequest(http.MethodGet, "https://"+target+"/", nil)
	req.Write(tls)
	ibr := bufio.NewReader(tls)
	if resp, err = http.ReadResponse(ibr, req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("https:// in a tunnel: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if _, err := ibr.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("an idle tunnel: %v, want it closed (EOF)", err)
	}
}

// TestForwardProxyMaxTunnels: past -max-tunnels open tunnels a CONNECT
// gets a 503 and the proxy logs that the cap was reached; once a tunnel
// closes, a CONNECT goes through again.
func TestForwardProxyMaxTunnels(t *testing.T) {
	site := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer site.Close()
	target := strings.TrimPrefix(site.URL, "https://")
	p := startProxyProc(t, "-max-tunnels", "2")
	first, _, s1 := connect(t, p.addr, target)
	_, _, s2 := connect(t, p.addr, target)
	if s1 != http.StatusOK || s2 != http.StatusOK {
		t.Fatalf("two tunnels: %d %d", s1, s2)
	}
	if _, _, s := connect(t, p.addr, target); s != http.StatusServiceUnavailable {
		t.Errorf("a third tunnel with -max-tunnels 2: %d, want 503", s)
	}
	if !p.waitLog(regexp.MustCompile(`level=WARN msg="tunnel limit reached: CONNECT answered 503" max_tunnels=2`)) {
		t.Errorf("the cap reached is not logged:\n%s", p.out.String())
	}
	first.Close()
	ok := false
	for deadline := time.Now().Add(20 * time.Second); !ok && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		c, _, s := connect(t, p.addr, target)
		ok = s == http.StatusOK
		c.Close()
	}
	if !ok {
		t.Errorf("no tunnel once one of two closed")
	}
}
