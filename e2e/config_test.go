package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// echoOrigin is an origin that answers with the fields the gateway sent.
func echoOrigin(t *testing.T) *httptest.Server {
	t.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "status=ok\n")
		for _, k := range []string{"Bot-Identity", "Req-Mtls-Cert-Status", "Web-Bot-Auth-Status"} {
			fmt.Fprintf(w, "%s=%s\n", k, r.Header.Get(k))
		}
	}))
	t.Cleanup(origin.Close)
	return origin
}

// accessLine waits for the access log's request line and returns it
// without what differs between runs: the time, the client's port, the
// durations.
func accessLine(t *testing.T, file string) string {
	t.Helper()
	b := waitFileContains(t, file, "msg=request ")
	line, _, _ := strings.Cut(string(b), "\n")
	if !strings.Contains(line, "msg=request ") {
		t.Fatalf("no request line in %s:\n%s", file, b)
	}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`time=\S+ `), regexp.MustCompile(`client=127\.0\.0\.1:\d+ `),
		regexp.MustCompile(` duration=\S+`), regexp.MustCompile(` upstream_time=\S+`),
	} {
		line = re.ReplaceAllString(line, "")
	}
	return line
}

// TestConfigFileSameAsFlags: a gateway set up by flags and the same one by
// a file write the same access log line for the same request.
func TestConfigFileSameAsFlags(t *testing.T) {
	p := newPKI(t)
	origin := echoOrigin(t)
	dir := t.TempDir()
	byFlags, byFile := filepath.Join(dir, "flags.log"), filepath.Join(dir, "file.log")
	addr1 := startBinary(t, "server", nil, listening, "-cert", p.f("server.crt"), "-key", p.f("server.key"),
		"-client-cacert", p.f("rootCA.crt"), "-client-auth", "verify", "-upstream", origin.URL, "-xfcc",
		"-max-request-body", "1MiB", "-access-log", byFlags, "-listen-addr", "127.0.0.1:0")
	conf := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`# the same, by file
cert: %s
key: %s
client_cacert: %s
client_auth: verify
upstream: %s
xfcc: true
max_request_body: 1MiB
access_log: %s
listen_addr: 127.0.0.1:0
`, p.f("server.crt"), p.f("server.key"), p.f("rootCA.crt"), origin.URL, byFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr2 := startBinary(t, "server", nil, listening, "-config", conf)
	for _, addr := range []string{addr1, addr2} {
		out := client(t, nil, "-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key"),
			"-server-cacert", p.f("rootCA.crt"), "-connect", "https://"+addr+"/page?q=1")
		if m := echoed(t, out); m["Req-Mtls-Cert-Status"] != "valid" {
			t.Fatalf("origin saw %v", m)
		}
	}
	a, b := accessLine(t, byFlags), accessLine(t, byFile)
	// The host differs by the port alone.
	_, port1, _ := strings.Cut(addr1, ":")
	_, port2, _ := strings.Cut(addr2, ":")
	b = strings.ReplaceAll(b, port2, port1)
	if a != b || !strings.Contains(a, "cert=valid") || !strings.Contains(a, "status=200") {
		t.Errorf("by flags:\n%s\nby file:\n%s", a, b)
	}
	t.Logf("both: %s", a)
}

// docsBlock returns the fenced block that follows the HTML comment marker
// in a page of docs/.
func docsBlock(t *testing.T, page, marker string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "docs", page))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(data), "<!-- "+marker+" -->\n```")
	if !ok {
		t.Fatalf("docs/%s has no block after <!-- %s -->", page, marker)
	}
	_, body, _ := strings.Cut(after, "\n")
	body, _, ok = strings.Cut(body, "\n```")
	if !ok {
		t.Fatalf("docs/%s: the block after <!-- %s --> does not end", page, marker)
	}
	return body + "\n"
}

// TestBotIdentityPythonOrigin: the Python origin of docs/config.md behind
// the gateway greets a bot by the name Bot-Identity gives for each layer
// that verified, and refuses a client that verified none, whatever
// Bot-Identity it sends itself.
func TestBotIdentityPythonOrigin(t *testing.T) {
	python := needPeer(t, "python3")
	p := newPKI(t)
	dir := t.TempDir()
	originAddr := freeAddr(t)
	_, port, _ := strings.Cut(originAddr, ":")
	src := docsBlock(t, "config.md", "origin: bot-identity")
	if !strings.Contains(src, "8080") {
		t.Fatalf("the origin listens on no port 8080:\n%s", src)
	}
	script := filepath.Join(dir, "origin.py")
	if err := os.WriteFile(script, []byte(strings.ReplaceAll(src, "8080", port)), 0o600); err != nil {
		t.Fatal(err)
	}
	origin := exec.Command(python, script)
	var originLog strings.Builder
	origin.Stderr = &originLog
	if err := origin.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { origin.Process.Kill(); origin.Wait() })
	waitListening(t, originAddr, originLog.String)

	key := filepath.Join(dir, "bot.key")
	run(t, nil, filepath.Join(binDir, "gencert"), "-signature-key", key)
	agents := filepath.Join(dir, "agents")
	if err := os.WriteFile(agents, []byte("https://bot.example "+key+".jwks\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, _ := startGateway(t, p, "http://"+originAddr, "-bot-cacert", p.f("rootCA.crt"), "-signature-agents", agents)
	url := "https://" + addr + "/"
	cert := []string{"-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key")}
	sign := []string{"-sign-key", key, "-signature-agent", "https://bot.example"}
	spoof := []string{"-H", `Bot-Identity: dns="evil.example", layers=(tls)`, "-H", `Bot_Identity: agent="https://evil.example", layers=(signature)`,
		"-H", `BOT-IDENTITY: dns="evil.example", layers=(tls)`}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"Cert", cert, "HTTP/2.0 200 OK\n.*\n\nhello client.example, verified by tls\n"},
		{"Signature", sign, "HTTP/2.0 200 OK\n.*\n\nhello https://bot.example, verified by signature\n"},
		{"CertAndSignature", append(append(append([]string{}, cert...), sign...), spoof...), "HTTP/2.0 200 OK\n.*\n\nhello client.example, verified by tls and signature\n"},
		{"Neither_Spoofed", spoof, "HTTP/2.0 403 Forbidden\n.*\n\nverified bots only\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"-i", "-server-cacert", p.f("rootCA.crt")}, tc.args...), "-connect", url)
			out, _ := runErr(nil, filepath.Join(binDir, "client"), args...)
			if !regexp.MustCompile(`(?s)^` + tc.want).MatchString(out) {
				t.Errorf("client saw:\n%s\nwant %q", out, tc.want)
			}
		})
	}
}
