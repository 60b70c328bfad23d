package e2e

// The forward proxy as a process: what it does at SIGTERM and SIGHUP.

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
