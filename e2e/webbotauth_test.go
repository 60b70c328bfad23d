package e2e

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// needWebBotAuth returns the directory where Cloudflare's web-bot-auth
// (pinned in e2e/wba/package.json) is installed, and node.
func needWebBotAuth(t *testing.T) (dir, node string) {
	t.Helper()
	node = needPeer(t, "node")
	dir, _ = filepath.Abs("wba")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "web-bot-auth", "package.json")); err != nil {
		if os.Getenv("REQ_MTLS_REQUIRE_PEERS") != "" {
			t.Fatalf("web-bot-auth not installed in %s (npm install --prefix e2e/wba --no-package-lock)", dir)
		}
		t.Skipf("SKIP: web-bot-auth not installed in %s", dir)
	}
	return dir, node
}

// botKey writes an Ed25519 key as PEM (PKCS #8) and as private and public
// JWKs, and returns it with the three files.
// agentsListing writes a list of trusted agents naming https://bot.example
// with the public JWK in pubJWK as its directory, and returns its path.
func agentsListing(t *testing.T, pubJWK string) string {
	t.Helper()
	dir := t.TempDir()
	jwks := filepath.Join(dir, "bot.jwks")
	pub, err := os.ReadFile(pubJWK)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(jwks, []byte(`{"keys":[`+string(pub)+`]}`), 0o600)
	agents := filepath.Join(dir, "agents")
	os.WriteFile(agents, []byte("https://bot.example "+jwks+"\n"), 0o600)
	return agents
}

// statusOrigin is an origin that answers with the Web-Bot-Auth-Status
// field the gateway sent it.
func statusOrigin(t *testing.T) *httptest.Server {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("Web-Bot-Auth-Status"))
	}))
	t.Cleanup(origin.Close)
	return origin
}

func botKey(t *testing.T) (key ed25519.PrivateKey, pemFile, privJWK, pubJWK string) {
	t.Helper()
	_, key, _ = ed25519.GenerateKey(nil)
	dir := t.TempDir()
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	pemFile = filepath.Join(dir, "bot.pem")
	os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	x := base64.RawURLEncoding.EncodeToString(key.Public().(ed25519.PublicKey))
	d := base64.RawURLEncoding.EncodeToString(key.Seed())
	privJWK, pubJWK = filepath.Join(dir, "bot.jwk"), filepath.Join(dir, "bot.pub.jwk")
	os.WriteFile(privJWK, []byte(`{"kty":"OKP","crv":"Ed25519","x":"`+x+`","d":"`+d+`"}`), 0o600)
	os.WriteFile(pubJWK, []byte(`{"kty":"OKP","crv":"Ed25519","x":"`+x+`"}`), 0o600)
	return key, pemFile, privJWK, pubJWK
}

// TestWebBotAuthNPM: Cloudflare's web-bot-auth verifies the requests our
// client signs (directly, with a PEM or a JWK key, and through the forward
// proxy for curl), and our verifier verifies the requests it signs.
func TestWebBotAuthNPM(t *testing.T) {
	wba, node := needWebBotAuth(t)
	p := newPKI(t)
	key, pemFile, privJWK, pubJWK := botKey(t)

	cmd := exec.Command(node, filepath.Join(wba, "verify-server.mjs"), p.f("server.crt"), p.f("server.key"), pubJWK)
	cmd.Dir = wba
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if port, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				ready <- port
			}
		}
	}()
	var site string
	select {
	case port := <-ready:
		site = "https://127.0.0.1:" + port + "/page"
	case <-time.After(20 * time.Second):
		t.Fatal("the web-bot-auth verifier did not start")
	}

	for _, tc := range []struct{ name, key string }{{"PEMKey", pemFile}, {"JWKKey", privJWK}} {
		got := client(t, nil, "-sign-key", tc.key, "-signature-agent", "https://bot.example", "-server-cacert", p.f("rootCA.crt"), "--connect", site)
		if !strings.Contains(got, "web-bot-auth: valid\n") || !strings.Contains(got, `signature-agent: "https://bot.example"`) {
			t.Errorf("%s: web-bot-auth on our client's request:\n%s", tc.name, got)
		}
		t.Logf("%s: web-bot-auth on our client's request: %s", tc.name, strings.TrimSpace(got))
	}

	// Through the forward proxy: curl signs nothing, the proxy does.
	curl := needPeer(t, "curl")
	proxy, root := startForwardProxy(t, "-sign-key", pemFile, "-signature-agent", "https://bot.example", "-server-cacert", p.f("rootCA.crt"))
	got, err := runErr(nil, curl, "-sS", "--proxy", "http://"+proxy, "--cacert", root, site)
	if err != nil || !strings.Contains(got, "web-bot-auth: valid\n") {
		t.Errorf("curl through the signing forward proxy: %v\n%s", err, got)
	}
	t.Logf("curl through the forward proxy: %s", strings.TrimSpace(got))

	// The other way: web-bot-auth signs, we verify.
	signed, err := exec.Command(node, filepath.Join(wba, "sign.mjs"), "https://site.example/x", privJWK, "https://bot.example").CombinedOutput()
	if err != nil {
		t.Fatalf("web-bot-auth signing: %v\n%s", err, signed)
	}
	var fields map[string]string
	if err := json.Unmarshal(signed, &fields); err != nil {
		t.Fatalf("%v: %s", err, signed)
	}
	verify := func(target string) error {
		r, _ := http.NewRequest("GET", target, nil)
		for k, v := range fields {
			r.Header.Set(k, v)
		}
		sigs, err := httpsig.Parse(r.Header)
		if err != nil {
			return err
		}
		for _, s := range sigs {
			if s.Params.Tag != "web-bot-auth" || s.Params.KeyID != httpsig.Thumbprint(key.Public().(ed25519.PublicKey)) || !s.Covers("@authority", "") || !s.Covers("signature-agent", "") {
				t.Errorf("web-bot-auth's signature: %+v covering %v", s.Params, s.Components())
			}
			return httpsig.Verify(r, s, key.Public())
		}
		return nil
	}
	if err := verify("https://site.example/x"); err != nil {
		t.Errorf("our verifier on web-bot-auth's signature: %v\n%s", err, signed)
	}
	if err := verify("https://other.example/x"); err == nil {
		t.Error("web-bot-auth's signature for site.example verified for other.example")
	}
	t.Logf("web-bot-auth signed %s; our verifier accepts it for site.example, refuses it for other.example", signed)
}

// TestGatewayVerifiesWebBotAuthNPM: a request signed by Cloudflare's
// web-bot-auth reaches the gateway binary, which verifies it against the
// agents file and tells the origin; the same signature sent to another
// authority is refused.
func TestGatewayVerifiesWebBotAuthNPM(t *testing.T) {
	wba, node := needWebBotAuth(t)
	curl := needPeer(t, "curl")
	p := newPKI(t)
	_, _, privJWK, pubJWK := botKey(t)
	agents := agentsListing(t, pubJWK)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, f := range []string{"Web-Bot-Auth-Status", "Web-Bot-Auth-Agent", "Web-Bot-Auth-Keyid"} {
			fmt.Fprintf(w, "%s: %s\n", f, r.Header.Get(f))
		}
	}))
	defer origin.Close()
	gw, _ := startGateway(t, p, origin.URL, "-signature-agents", agents)
	_, port, _ := strings.Cut(gw, ":")

	sign := func(authority string) []string {
		out, err := exec.Command(node, filepath.Join(wba, "sign.mjs"), "https://"+authority+"/page", privJWK, "https://bot.example").CombinedOutput()
		if err != nil {
			t.Fatalf("web-bot-auth signing: %v\n%s", err, out)
		}
		var fields map[string]string
		if err := json.Unmarshal(out, &fields); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var args []string
		for k, v := range fields {
			args = append(args, "-H", k+": "+v)
		}
		return args
	}
	get := func(args ...string) string {
		base := []string{"-sS", "--cacert", p.f("rootCA.crt"), "--resolve", "localhost:" + port + ":127.0.0.1", "https://localhost:" + port + "/page"}
		out, err := runErr(nil, curl, append(base, args...)...)
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		return out
	}
	out := get(sign("localhost:" + port)...)
	if !strings.Contains(out, "Web-Bot-Auth-Status: valid\n") || !strings.Contains(out, `Web-Bot-Auth-Agent: "https://bot.example"`) {
		t.Errorf("a request signed by web-bot-auth, at the origin:\n%s", out)
	}
	t.Logf("signed by web-bot-auth, the origin sees:\n%s", out)
	out = get(sign("other.example")...)
	if !strings.Contains(out, `Web-Bot-Auth-Status: invalid;reason="signature does not verify"`) {
		t.Errorf("a signature for another authority, at the origin:\n%s", out)
	}
	t.Logf("signed for another authority, the origin sees:\n%s", out)
	// The same signature for evil.example, sent in absolute form on a
	// connection made for localhost: its @authority is evil.example, as
	// signed, but the connection is not that site's.
	out = get(append(sign("evil.example"), "--http1.1", "--request-target", "https://evil.example/page")...)
	if !strings.Contains(out, `Web-Bot-Auth-Status: invalid;reason="@authority \"evil.example\" is not a name this connection was made for"`) {
		t.Errorf("a signature for evil.example replayed in absolute form to localhost, at the origin:\n%s", out)
	}
	t.Logf("signed for evil.example, sent in absolute form to localhost, the origin sees:\n%s", out)
}

// TestDirectoryPublishedAndFetched: a bot operator's key, made by gencert,
// published by our server as a signed directory, fetched and checked by
// our gateway (the agent listed by URL alone), which then verifies the
// bot's signed requests; the access log says so.
func TestDirectoryPublishedAndFetched(t *testing.T) {
	p := newPKI(t)
	key := filepath.Join(t.TempDir(), "bot.key")
	if out := run(t, nil, filepath.Join(binDir, "gencert"), "-signature-key", key); !strings.Contains(out, "keyid (JWK SHA-256 thumbprint): ") {
		t.Fatalf("gencert: %s", out)
	}
	// The bot operator's site, serving the directory.
	botSite := startServer(t, p, nil, "-signature-directory", key)
	agent := "https://" + botSite
	// The site's gateway, trusting that agent.
	agents := filepath.Join(t.TempDir(), "agents")
	os.WriteFile(agents, []byte(agent+"\n"), 0o600)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "status=%s agent=%s\n", r.Header.Get("Web-Bot-Auth-Status"), r.Header.Get("Web-Bot-Auth-Agent"))
	}))
	defer origin.Close()
	gw, accessLog := startGateway(t, p, origin.URL, "-signature-agents", agents, "-signature-agents-cacert", p.f("rootCA.crt"))
	var out string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out = client(t, nil, "-sign-key", key, "-signature-agent", agent, "-server-cacert", p.f("rootCA.crt"), "--connect", "https://"+gw+"/page")
		if strings.Contains(out, "status=valid") {
			break
		}
	}
	if want := "status=valid agent=" + strconvQuote(agent); !strings.Contains(out, want) {
		t.Fatalf("the origin saw %q, want %q", out, want)
	}
	t.Logf("the origin saw: %s", strings.TrimSpace(out))
	log := waitFileContains(t, accessLog, "web_bot_auth=valid")
	if !strings.Contains(string(log), "web_bot_auth=valid") {
		t.Errorf("the access log lacks the verdict:\n%s", log)
	}
}

func strconvQuote(s string) string { return `"` + s + `"` }

// TestWebBotAuthMaxValidity: -signature-max-validity sets how long a
// signature may be valid for (expires - created): under it, valid; over
// it, invalid, the reason naming the bound. A bound of 0 is misuse.
func TestWebBotAuthMaxValidity(t *testing.T) {
	p := newPKI(t)
	key, _, _, pubJWK := botKey(t)
	agents := agentsListing(t, pubJWK)
	origin := statusOrigin(t)
	gw, _ := startGateway(t, p, origin.URL, "-signature-agents", agents, "-signature-max-validity", "2h")
	_, port, _ := strings.Cut(gw, ":")

	pool := x509.NewCertPool()
	root, _ := os.ReadFile(p.f("rootCA.crt"))
	pool.AppendCertsFromPEM(root)
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: tlsConfig(pool),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, gw)
		},
	}}
	defer hc.CloseIdleConnections()
	status := func(validity time.Duration) string {
		r, _ := http.NewRequest("GET", "https://localhost:"+port+"/page", nil)
		r.Header.Set("Signature-Agent", `"https://bot.example"`)
		params, err := httpsig.BotParams(key.Public().(ed25519.PublicKey), time.Now(), validity)
		if err != nil {
			t.Fatal(err)
		}
		if err := httpsig.Sign(r, "sig1", httpsig.NewCovered([]string{"@authority", "signature-agent"}, params), key); err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	for _, tc := range []struct {
		validity time.Duration
		want     string
	}{
		{90 * time.Minute, "valid"},
		{3 * time.Hour, `invalid;reason="valid for longer than 2h0m0s"`},
	} {
		if got := status(tc.validity); got != tc.want {
			t.Errorf("a signature valid for %v, with -signature-max-validity 2h: %s, want %s", tc.validity, got, tc.want)
		}
	}

	out, err := runErr(nil, filepath.Join(binDir, "server"), "-cert", p.f("server.crt"), "-key", p.f("server.key"),
		"-signature-agents", agents, "-signature-max-validity", "0")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, "-signature-max-validity must be positive, not 0s") {
		t.Errorf("-signature-max-validity 0: %v, want exit code 2 and a message saying why:\n%s", err, out)
	}
}
