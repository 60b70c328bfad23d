package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testutil"
)

// needPeer finds a third-party program. Without it the test is skipped
// with one line, unless REQ_MTLS_REQUIRE_PEERS is set (as CI sets it), in
// which case a missing peer fails the test: CI can never pass by skipping.
func needPeer(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("REQ_MTLS_REQUIRE_PEERS") != "" {
		t.Fatalf("peer %s not installed, and REQ_MTLS_REQUIRE_PEERS is set", name)
	}
	t.Skipf("SKIP: peer %s not installed (Debian package %s)", name, name)
	return ""
}

// pki is a set of certificates made by the gencert binary.
type pki struct{ dir string }

func (p pki) f(name string) string { return filepath.Join(p.dir, name) }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	run(t, nil, filepath.Join(binDir, "gencert"), "-dir", dir)
	return pki{dir}
}

// run runs a command and returns its combined output; it fails the test
// when the command fails.
func run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startServer runs the server binary on a free loopback port and returns
// its address.
func startServer(t *testing.T, p pki, env []string, args ...string) string {
	t.Helper()
	args = append([]string{"-cert", p.f("server.crt"), "-key", p.f("server.key"), "-client-cacert", p.f("rootCA.crt"), "-listen-addr", "127.0.0.1:0"}, args...)
	return startBinary(t, "server", env, listening, args...)
}

// startBinary runs one of the built binaries until the test ends, and
// returns the first submatch of the first stderr line that ready matches,
// once one does.
func startBinary(t *testing.T, name string, env []string, ready *regexp.Regexp, args ...string) string {
	t.Helper()
	v, _, _ := startStoppable(t, name, env, ready, args...)
	return v
}

// startStoppable is startBinary, also returning the process (to signal) and
// a function that stops it (killed) and waits for it, before the test ends.
func startStoppable(t *testing.T, name string, env []string, ready *regexp.Regexp, args ...string) (string, *os.Process, func()) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { cmd.Process.Kill(); cmd.Wait() }) }
	t.Cleanup(stop)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if m := ready.FindStringSubmatch(sc.Text()); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
	}()
	select {
	case v := <-found:
		return v, cmd.Process, stop
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start", name)
		return "", cmd.Process, stop
	}
}

func client(t *testing.T, env []string, args ...string) string {
	t.Helper()
	return run(t, env, filepath.Join(binDir, "client"), args...)
}

func TestCurl(t *testing.T) {
	curl := needPeer(t, "curl")
	p := newPKI(t)
	addr := startServer(t, p, nil)
	for _, proto := range []string{"--http1.1", "--http2"} {
		out := run(t, nil, curl, "-sS", proto, "--cacert", p.f("rootCA.crt"), "-w", "proto=%{http_version}", "https://"+addr+"/debug")
		if !strings.Contains(out, "Client cert requested: false\nPeer certificate received: false\n") {
			t.Errorf("curl %s, no flag, was asked for a certificate:\n%s", proto, out)
		}
		want := map[string]string{"--http1.1": "proto=1.1", "--http2": "proto=2"}[proto]
		if !strings.HasSuffix(out, want) {
			t.Errorf("curl %s: %q, want %s", proto, out, want)
		}
	}
	t.Logf("curl without the flag: no certificate requested, HTTP/1.1 and HTTP/2")

	// Plain HTTP on the TLS port gets net/http's 400, not an empty reply.
	out := run(t, nil, curl, "-sS", "-w", "status=%{http_code}", "http://"+addr+"/")
	if !strings.Contains(out, "Client sent an HTTP request to an HTTPS server.") || !strings.HasSuffix(out, "status=400") {
		t.Errorf("curl http:// on the TLS port: %q, want a 400", out)
	}
	t.Logf("curl http:// on the TLS port: 400 Bad Request")

	always := startServer(t, p, nil, "-client-auth", "always")
	out = run(t, nil, curl, "-sS", "--cacert", p.f("rootCA.crt"), "--cert", p.f("client.crt"), "--key", p.f("client.key"), "https://"+always+"/debug")
	if !strings.Contains(out, "Client cert requested: true\nPeer certificate received: true\nCert received: client.example\nCert validated: true\n") {
		t.Errorf("curl --cert under always:\n%s", out)
	}
	if out, err := runErr(nil, curl, "-sS", "--cacert", p.f("rootCA.crt"), "https://"+always+"/debug"); err == nil {
		t.Errorf("curl without --cert under always succeeded:\n%s", out)
	} else if !strings.Contains(out, "alert") && !strings.Contains(out, "certificate required") {
		t.Errorf("curl without --cert: %s", out)
	}
	t.Logf("curl under -client-auth always: --cert/--key accepted, none refused")
}

var certRequestMsg = regexp.MustCompile(`<<< TLS 1\.[23], Handshake \[length [0-9a-f]+\], CertificateRequest`)

func TestOpenSSLClient(t *testing.T) {
	openssl := needPeer(t, "openssl")
	p := newPKI(t)
	addr := startServer(t, p, nil)
	always := startServer(t, p, nil, "-client-auth", "always")
	sclient := func(addr string, extra ...string) string {
		args := append([]string{"s_client", "-connect", addr, "-servername", "localhost", "-CAfile", p.f("rootCA.crt"), "-msg"}, extra...)
		out, _ := runErr(nil, openssl, args...)
		if !strings.Contains(out, "Verify return code: 0 (ok)") {
			t.Fatalf("s_client %v did not complete:\n%s", extra, out)
		}
		return out
	}
	if out := sclient(addr); certRequestMsg.MatchString(out) {
		t.Errorf("s_client (no flag) saw a CertificateRequest")
	}
	if out := sclient(addr, "-tls1_2"); certRequestMsg.MatchString(out) || !strings.Contains(out, "Protocol  : TLSv1.2") {
		t.Errorf("TLS 1.2 s_client saw a CertificateRequest, or did not speak TLS 1.2")
	}
	if out := sclient(always, "-cert", p.f("client.crt"), "-key", p.f("client.key")); !certRequestMsg.MatchString(out) {
		t.Errorf("s_client under always saw no CertificateRequest:\n%s", out)
	}
	t.Logf("openssl s_client -msg: CertificateRequest only under -client-auth always; TLS 1.2 never asked")
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestOpenSSLServer(t *testing.T) {
	openssl := needPeer(t, "openssl")
	p := newPKI(t)
	addr := freePort(t)
	logf := filepath.Join(t.TempDir(), "s_server.log")
	lf, _ := os.Create(logf)
	cmd := exec.Command(openssl, "s_server", "-accept", addr, "-cert", p.f("server.crt"), "-key", p.f("server.key"),
		"-CAfile", p.f("rootCA.crt"), "-Verify", "1", "-www", "-msg")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var out string
	var err error
	for range 100 {
		if out, err = runErr(nil, filepath.Join(binDir, "client"), "-v", "-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key"),
			"-server-cacert", p.f("rootCA.crt"), "-connect", "https://localhost:"+strings.Split(addr, ":")[1]+"/"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("client against s_server: %v\n%s", err, out)
	}
	if !strings.Contains(out, "* CertificateRequest received") || !strings.Contains(out, "* client certificate sent") {
		t.Errorf("client did not present its certificate:\n%s", out)
	}
	cmd.Process.Kill()
	cmd.Wait()
	log, _ := os.ReadFile(logf)
	hello := hexAfter(string(log), "ClientHello")
	if !strings.Contains(hello, "fe01000c0b0000000000000000000001") {
		t.Errorf("s_server's ClientHello lacks tls_flags 0xfe01 with flag 80:\n%s", hello)
	}
	if !regexp.MustCompile(`<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], Certificate\n`).Match(log) {
		t.Errorf("s_server received no client Certificate:\n%s", log)
	}
	t.Logf("openssl s_server -Verify 1: our client sent its certificate; the ClientHello carried fe01 000c 0b..01, ignored by openssl")
}

// hexAfter joins the hex dump that -msg prints after the first line
// naming msg.
func hexAfter(log, msg string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(line, "Handshake") && strings.HasSuffix(line, msg):
			in = true
		case in && strings.HasPrefix(line, "    "):
			b.WriteString(strings.ReplaceAll(strings.TrimSpace(line), " ", ""))
		case in:
			return b.String()
		}
	}
	return b.String()
}

func TestTshark(t *testing.T) {
	tshark := needPeer(t, "tshark")
	p := newPKI(t)
	dir := t.TempDir()
	keylog := filepath.Join(dir, "keys.log")
	addr := startServer(t, p, nil)
	port := strings.Split(addr, ":")[1]
	capture := func(name string, clientArgs ...string) captured {
		pcap := filepath.Join(dir, name+".pcapng")
		cmd := exec.Command(tshark, "-q", "-i", "lo", "-f", "tcp port "+port, "-w", pcap)
		var stderr testutil.Buffer // written by exec's copying goroutine, read here
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200 && !strings.Contains(stderr.String(), "Capturing on"); i++ {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		client(t, []string{"SSLKEYLOGFILE=" + keylog}, append(clientArgs, "-server-cacert", p.f("rootCA.crt"), "-connect", "https://localhost:"+port+"/debug")...)
		time.Sleep(500 * time.Millisecond)
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		fields := func(filter string, fields ...string) string {
			args := []string{"-r", pcap, "-d", "tcp.port==" + port + ",tls", "-o", "tls.keylog_file:" + keylog, "-Y", filter, "-T", "fields"}
			for _, f := range fields {
				args = append(args, "-e", f)
			}
			cmd := exec.Command(tshark, args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("tshark: %v\n%s", err, stderr.String())
			}
			return strings.TrimSpace(string(out))
		}
		return captured{
			ext:     fields("tls.handshake.extension.type == 65025", "tls.handshake.extension.data"),
			certReq: fields("tls.handshake.type == 13", "frame.number"),
			path:    fields("http2.header.name == \":path\"", "http2.headers.path"),
			body:    unhex(fields("http2.data.data", "http2.data.data")),
		}
	}
	flagged := capture("flagged", "-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key"))
	if flagged.ext != "0b0000000000000000000001" || flagged.certReq == "" || flagged.path != "/debug" || !strings.Contains(flagged.body, "Cert validated: true") {
		t.Errorf("flagged capture: %+v", flagged)
	}
	plain := capture("unflagged")
	if plain.ext != "" || plain.certReq != "" || plain.path != "/debug" || !strings.Contains(plain.body, "Client cert requested: false") {
		t.Errorf("unflagged capture: %+v", plain)
	}
	t.Logf("tshark: flagged capture shows extension 65025 = %s, a CertificateRequest (frame %s) and the decrypted GET %s; unflagged shows neither", flagged.ext, flagged.certReq, flagged.path)
}

// captured is what tshark decoded of one exchange.
type captured struct{ ext, certReq, path, body string }

func unhex(s string) string {
	var b []byte
	fmt.Sscanf(strings.ReplaceAll(s, ":", ""), "%x", &b)
	return string(b)
}

func TestChromium(t *testing.T) {
	chromium := needPeer(t, "chromium")
	p := newPKI(t)
	addr := startServer(t, p, nil)
	dir := t.TempDir()
	shot := filepath.Join(dir, "index.png")
	common := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile"), "--ignore-certificate-errors", "--window-size=1024,900"}
	dom := run(t, nil, chromium, append(common, "--dump-dom", "https://"+addr+"/")...)
	for _, want := range []string{`<dd id="flags">[]</dd>`, `<dd id="requested"><span class="no">no</span></dd>`, `<dd id="version">TLS 1.3</dd>`, `<dd id="alpn">h2</dd>`} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %s", want)
		}
	}
	img := screenshot(t, chromium, shot, append(common, "https://"+addr+"/")...)
	if b := img.Bounds(); b.Dx() != 1024 || b.Dy() != 900 {
		t.Errorf("screenshot is %v, want 1024x900", b)
	}
	if colors := distinctColors(img); colors < 8 {
		t.Errorf("screenshot has %d colours: blank page?", colors)
	}
	if keep := os.Getenv("REQ_MTLS_SCREENSHOT"); keep != "" {
		data, _ := os.ReadFile(shot)
		os.WriteFile(keep, data, 0o644)
	}
	t.Logf("chromium: index page rendered over HTTPS, no flags, no certificate requested; screenshot 1024x900")
}

// screenshot has headless Chromium (with args, the page's URL last) write
// a PNG to shot, and decodes it.
func screenshot(t *testing.T, chromium, shot string, args ...string) image.Image {
	t.Helper()
	page := args[len(args)-1]
	run(t, nil, chromium, append(args[:len(args)-1:len(args)-1], "--screenshot="+shot, page)...)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	return img
}

func distinctColors(img image.Image) int {
	seen := map[uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bl, _ := img.At(x, y).RGBA()
			seen[r>>8<<16|g>>8<<8|bl>>8] = true
		}
	}
	return len(seen)
}
