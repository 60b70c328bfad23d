package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/req-mtls/req-mtls/internal/testutil"
)

// startTinyproxy runs Debian's tinyproxy on a free loopback port, as a
// CONNECT proxy to any port, asking for user:secret, and returns its
// address and a function that reads its log.
func startTinyproxy(t *testing.T) (addr string, logs func() string) {
	t.Helper()
	tp := needPeer(t, "tinyproxy")
	dir := t.TempDir()
	addr = freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "tinyproxy.conf")
	logFile := filepath.Join(dir, "tinyproxy.log")
	user := ""
	if os.Geteuid() == 0 {
		user = "User root\nGroup root\n"
	}
	// No ConnectPort line: CONNECT to any port (the test server's).
	os.WriteFile(conf, []byte(user+`Port `+port+`
Listen 127.0.0.1
Timeout 30
LogFile "`+logFile+`"
LogLevel Info
MaxClients 20
Allow 127.0.0.1
BasicAuth user secret
`), 0o600)
	cmd := exec.Command(tp, "-d", "-c", conf)
	out, _ := os.Create(filepath.Join(dir, "stderr"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	logs = func() string {
		a, _ := os.ReadFile(logFile)
		b, _ := os.ReadFile(filepath.Join(dir, "stderr"))
		return string(a) + string(b)
	}
	waitListening(t, addr, logs)
	return addr, logs
}

// TestClientThroughProxy: the client tunnels through Debian's tinyproxy
// (CONNECT, with Basic credentials) and the handshake inside the tunnel
// carries flag 80 and the certificate, as /debug behind it shows; a
// refusal names the proxy and its status (tinyproxy answers a CONNECT
// with wrong credentials 401, where RFC 9110 has 407).
func TestClientThroughProxy(t *testing.T) {
	proxy, logs := startTinyproxy(t)
	p := newPKI(t)
	srv := startServer(t, p, nil)
	target := "https://" + srv + "/debug"
	flagged := []string{"-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key"), "-server-cacert", p.f("rootCA.crt")}

	out := client(t, nil, append(flagged, "-x", "http://user:secret@"+proxy, "-v", "--connect", target)...)
	if !strings.Contains(out, "Client sent TLS Flags: [80]\n") || !strings.Contains(out, "Cert validated: true\n") {
		t.Errorf("through tinyproxy, flagged:\n%s", out)
	}
	if !strings.Contains(logs(), "CONNECT") {
		t.Errorf("tinyproxy logged no CONNECT:\n%s", logs())
	}
	t.Logf("through tinyproxy:\n%s", out)

	out, err := runErr(nil, filepath.Join(binDir, "client"), append(flagged, "-x", "http://user:wrong@"+proxy, "--connect", target)...)
	if err == nil || !strings.Contains(out, "client: error: proxy http://user:xxxxx@"+proxy+" refused CONNECT "+srv+": 401 Unauthorized") ||
		!strings.Contains(out, "client: hint: the proxy wants credentials") {
		t.Errorf("wrong credentials: %v\n%s", err, out)
	}
	t.Logf("wrong credentials:\n%s", out)
}

// TestClientHonoursProxyEnvironment: without -x, HTTPS_PROXY is honoured
// for a host that is not loopback (a name the proxy resolves), and
// NO_PROXY too.
func TestClientHonoursProxyEnvironment(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, p, nil)
	_, port, _ := net.SplitHostPort(srv)
	cp, proxyURL := testutil.StartConnectProxy(t, map[string]string{"bots.example": "127.0.0.1"})
	args := []string{"-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key"), "-server-cacert", p.f("rootCA.crt"),
		"-servername", "localhost", "--connect", "https://bots.example:" + port + "/debug"}
	out := client(t, []string{"HTTPS_PROXY=" + proxyURL.String(), "NO_PROXY="}, args...)
	if !strings.Contains(out, "Cert validated: true\n") || len(cp.Tunnels()) != 1 || cp.Tunnels()[0] != "bots.example:"+port {
		t.Errorf("HTTPS_PROXY: tunnels %q\n%s", cp.Tunnels(), out)
	}
	// NO_PROXY takes the host out: it is then looked up directly, and
	// does not resolve.
	out, err := runErr([]string{"HTTPS_PROXY=" + proxyURL.String(), "NO_PROXY=bots.example"}, filepath.Join(binDir, "client"), args...)
	if err == nil || len(cp.Tunnels()) != 1 {
		t.Errorf("NO_PROXY: %v, tunnels %q\n%s", err, cp.Tunnels(), out)
	}
}

// TestClientProxyDownNamesProxy: a proxy that cannot be reached is named
// as the failure, not the site behind it.
func TestClientProxyDownNamesProxy(t *testing.T) {
	out, err := runErr(nil, filepath.Join(binDir, "client"), "-x", "http://127.0.0.1:9", "-connect", "https://localhost:8775/debug")
	if err == nil || !strings.Contains(out, "client: error: proxy http://127.0.0.1:9 (tunnel to localhost:8775): connection refused") ||
		!strings.Contains(out, "client: hint: check the proxy's URL (-x, HTTPS_PROXY)") {
		t.Errorf("proxy down: %v\n%s", err, out)
	}
}
