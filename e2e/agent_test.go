package e2e

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// TestWebBotAuthNPMDirectory: a bot's one identity, made by gencert -agent
// with its signing key, published by our server as one directory that
// lists the TLS key beside the signing key. Cloudflare's web-bot-auth, as a
// verifier, takes every key's keyid, passes over the TLS key it cannot
// verify signatures with, checks the directory's signature, and verifies a
// request signed with the directory's signing key.
func TestWebBotAuthNPMDirectory(t *testing.T) {
	wba, node := needWebBotAuth(t)
	p := newPKI(t)
	dir := t.TempDir()
	sign := filepath.Join(dir, "sign.key")
	out := run(t, nil, filepath.Join(binDir, "gencert"), "-agent", "https://bot.example", "-signature-key", sign, "-dir", dir)
	if !strings.Contains(out, "wrote "+filepath.Join(dir, "agent.key")) {
		t.Fatalf("gencert -agent: %s", out)
	}
	botSite := startServer(t, p, nil, "-signature-directory", sign+","+filepath.Join(dir, "agent.key"))

	// A request signed as the bot signs, for web-bot-auth to verify with
	// the key it finds in the directory.
	key, err := httpsig.LoadSigningKey(sign)
	if err != nil {
		t.Fatal(err)
	}
	const target = "https://site.example/page"
	r, _ := http.NewRequest("GET", target, nil)
	r.Header.Set("Signature-Agent", `"https://`+botSite+`"`)
	params, err := httpsig.BotParams(key.Public().(ed25519.PublicKey), time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := httpsig.Sign(r, "sig1", httpsig.NewCovered([]string{"@authority", "signature-agent"}, params), key); err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, f := range []string{"Signature-Agent", "Signature-Input", "Signature"} {
		fields[f] = r.Header.Get(f)
	}
	data, _ := json.Marshal(fields)
	reqFile := filepath.Join(dir, "request.json")
	os.WriteFile(reqFile, data, 0o600)

	cmd := exec.Command(node, filepath.Join(wba, "directory.mjs"), "https://"+botSite, p.f("rootCA.crt"), reqFile, target)
	cmd.Dir = wba
	got, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "directory: ok") {
		t.Fatalf("web-bot-auth on the directory: %v\n%s", err, got)
	}
	for _, want := range []string{"OKP Ed25519: usable for signatures", "EC P-256: passed over", "directory signature: valid", "request signature: valid"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("web-bot-auth on the directory: no %q in\n%s", want, got)
		}
	}
	t.Logf("web-bot-auth on the directory that lists the TLS key:\n%s", got)
}

// agentFields are the fields the agent tests' origin echoes.
var agentFields = []string{"Req-Mtls-Cert-Status", "Req-Mtls-Cert-Store", "Req-Mtls-Cert-Agent", "Web-Bot-Auth-Status", "Web-Bot-Auth-Agent", "Bot-Identity-Match"}

// agentOrigin echoes agentFields, a line each, then status=ok.
func agentOrigin(t *testing.T) *httptest.Server {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, f := range agentFields {
			fmt.Fprintf(w, "%s=%s\n", f, r.Header.Get(f))
		}
		fmt.Fprintln(w, "status=ok")
	}))
	t.Cleanup(origin.Close)
	return origin
}

// TestAgentIdentityGateway: one bot identity made by gencert -agent and
// published by our server's directory, trusted by the gateway from the
// agent URL alone. The origin sees a self-signed agent certificate valid
// in store agent, with Bot-Identity-Match ?1 beside the same agent's
// signature; a CA-issued certificate carrying the agent URI validates the
// same way; a key the directory does not list, an agent the site does not
// trust, a denied certificate and a key the agent withdraws are not valid,
// each with its reason.
func TestAgentIdentityGateway(t *testing.T) {
	p := newPKI(t)
	botAddr := freeAddr(t)
	agent := "https://" + botAddr
	gencert := filepath.Join(binDir, "gencert")
	mk := func(url string, args ...string) (dir string) {
		dir = t.TempDir()
		run(t, nil, gencert, append([]string{"-agent", url, "-dir", dir}, args...)...)
		return dir
	}
	sign := filepath.Join(t.TempDir(), "sign.key")
	self := mk(agent, "-signature-key", sign)
	issued := mk(agent, "-ca-cert", p.f("rootCA.crt"), "-ca-key", p.f("rootCA.key"))
	unlisted := mk(agent)
	stranger := mk("https://stranger.example")
	// The bot's site publishes its directory: the signing key and two TLS keys.
	dirKeys := "-signature-directory"
	_, _, stopBot := startStoppable(t, "server", nil, listening, "-cert", p.f("server.crt"), "-key", p.f("server.key"),
		"-listen-addr", botAddr, dirKeys, sign+","+filepath.Join(self, "agent.key")+","+filepath.Join(issued, "agent.key"))

	// The site: a gateway that lists the agent by URL, and a deny list.
	siteDir := t.TempDir()
	agents, denyFile := filepath.Join(siteDir, "agents"), filepath.Join(siteDir, "deny")
	os.WriteFile(agents, []byte(agent+"\n"), 0o600)
	os.WriteFile(denyFile, []byte("# nothing denied yet\n"), 0o600)
	origin := agentOrigin(t)
	accessLog := filepath.Join(siteDir, "access.log")
	gw, gwProc, _ := startStoppable(t, "server", nil, listening, "-cert", p.f("server.crt"), "-key", p.f("server.key"),
		"-client-cacert", p.f("rootCA.crt"), "-listen-addr", "127.0.0.1:0", "-upstream", origin.URL, "-access-log", accessLog,
		"-signature-agents", agents, "-signature-agents-cacert", p.f("rootCA.crt"), "-deny", denyFile)

	get := func(dir string, signed bool) map[string]string {
		args := []string{"-tlsflags", "80", "-cert", filepath.Join(dir, "agent.crt"), "-key", filepath.Join(dir, "agent.key"), "-server-cacert", p.f("rootCA.crt")}
		if signed {
			args = append(args, "-sign-key", sign, "-signature-agent", agent)
		}
		return echoed(t, client(t, nil, append(args, "-connect", "https://"+gw+"/page")...))
	}
	var got map[string]string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got = get(self, true); got["Req-Mtls-Cert-Store"] == "agent" && got["Req-Mtls-Cert-Status"] == "valid" {
			break
		}
	}
	want := map[string]string{"Req-Mtls-Cert-Status": "valid", "Req-Mtls-Cert-Store": "agent", "Req-Mtls-Cert-Agent": strconvQuote(agent),
		"Web-Bot-Auth-Status": "valid", "Web-Bot-Auth-Agent": strconvQuote(agent), "Bot-Identity-Match": "?1"}
	check := func(name string, got map[string]string, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if strings.HasPrefix(v, "~") {
				if !strings.Contains(got[k], v[1:]) {
					t.Errorf("%s: %s: %q, want it to say %q", name, k, got[k], v[1:])
				}
			} else if got[k] != v {
				t.Errorf("%s: %s: %q, want %q", name, k, got[k], v)
			}
		}
		var lines []string
		for _, f := range agentFields {
			lines = append(lines, f+": "+got[f])
		}
		t.Logf("%s, the origin sees:\n  %s", name, strings.Join(lines, "\n  "))
	}
	check("self-signed agent certificate, signed request", got, want)
	check("CA-issued certificate with the agent URI", get(issued, false), map[string]string{
		"Req-Mtls-Cert-Status": "valid", "Req-Mtls-Cert-Store": "agent", "Req-Mtls-Cert-Agent": strconvQuote(agent)})
	check("key not in the directory", get(unlisted, false), map[string]string{
		"Req-Mtls-Cert-Status": `~invalid;reason="agent ` + agent + `: the key `, "Req-Mtls-Cert-Store": "agent", "Req-Mtls-Cert-Agent": ""})
	check("agent not trusted", get(stranger, false), map[string]string{
		"Req-Mtls-Cert-Status": "~https://stranger.example is not a trusted agent", "Req-Mtls-Cert-Store": "client"})

	// Python's requests, which can neither set TLS flags nor sign, through
	// the forward proxy holding the agent's identity: both layers.
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import requests").CombinedOutput(); err != nil {
		if os.Getenv("REQ_MTLS_REQUIRE_PEERS") != "" {
			t.Fatalf("python3-requests: %v\n%s", err, out)
		}
		t.Log("SKIP part: python3-requests not installed")
	} else {
		proxy, root := startForwardProxy(t, "-tlsflags", "80", "-cert", filepath.Join(self, "agent.crt"), "-key", filepath.Join(self, "agent.key"),
			"-sign-key", sign, "-signature-agent", agent, "-server-cacert", p.f("rootCA.crt"))
		py := filepath.Join(siteDir, "get.py")
		os.WriteFile(py, []byte(pythonRequests), 0o600)
		out := run(t, []string{"PROXY=" + proxy, "REQUESTS_CA_BUNDLE=" + root}, python, py, "https://localhost:"+port(gw)+"/page")
		check("python-requests through the forward proxy", echoed(t, out), want)
	}

	// Denied by the certificate's hash, as gencert -fingerprint prints it:
	// the gateway reloads the list when it changes.
	var certLine string
	for _, l := range strings.Split(run(t, nil, gencert, "-fingerprint", filepath.Join(self, "agent.crt")), "\n") {
		if strings.HasPrefix(l, "cert-sha256:") {
			certLine = l
		}
	}
	if certLine == "" {
		t.Fatal("gencert -fingerprint printed no cert-sha256 line")
	}
	os.WriteFile(denyFile, []byte(certLine+"\n"), 0o600)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got = get(self, true); strings.Contains(got["Req-Mtls-Cert-Status"], "denied") {
			break
		}
	}
	check("denied certificate", got, map[string]string{"Req-Mtls-Cert-Status": `invalid;reason="denied (cert-sha256 listed)"`, "Web-Bot-Auth-Status": "valid"})

	// Withdrawn: the bot's site publishes its directory without the
	// CA-issued certificate's key; the gateway, told by SIGHUP to fetch
	// again, stops vouching for it.
	stopBot()
	startBinary(t, "server", nil, listening, "-cert", p.f("server.crt"), "-key", p.f("server.key"),
		"-listen-addr", botAddr, dirKeys, sign+","+filepath.Join(self, "agent.key"))
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		gwProc.Signal(syscall.SIGHUP)
		if got = get(issued, false); strings.Contains(got["Req-Mtls-Cert-Status"], "invalid") {
			break
		}
	}
	check("withdrawn key", got, map[string]string{"Req-Mtls-Cert-Status": `~is not in the agent's directory`, "Req-Mtls-Cert-Store": "agent"})
	log, _ := os.ReadFile(accessLog)
	if !strings.Contains(string(log), "cert_store=agent cert_agent="+agent) {
		t.Errorf("the access log does not name the agent:\n%s", log)
	}
	t.Logf("the gateway's access log:\n%s", log)
}
