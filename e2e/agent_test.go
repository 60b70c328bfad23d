package e2e

import (
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
