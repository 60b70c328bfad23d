package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// certSHA256Hex is the SHA-256 of a PEM certificate's DER, in hex.
func certSHA256Hex(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", file)
	}
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:])
}

// rulesConfig is a gateway whose rules each try one match key or one
// action, on a path of its own.
const rulesConfig = `cert: {{certs}}/server.crt
key: {{certs}}/server.key
client_cacert: {{certs}}/rootCA.crt
listen_addr: 127.0.0.1:0
upstream: {{origin}}
signature_agents: {{dir}}/agents
access_log: {{dir}}/access.log
admin_addr: {{admin}}
rules:
  - name: watch
    match: {path: /shadow}
    action: deny
    shadow: true
  - name: open
    match: {path: /open}
    action: allow
  - name: open-closed
    match: {path: /open}
    action: deny
  - name: by-method
    match: {path: /method, method: POST}
    action: deny
    status: 405
    reason: no posting here
  - name: cert-valid
    match: {path: /cert-valid, cert: valid}
    action: deny
  - name: cert-invalid
    match: {path: /cert-invalid, cert: invalid}
    action: deny
  - name: cert-none
    match: {path: /cert-none, cert: none}
    action: deny
  - name: store-bot
    match: {path: /store, store: bot}
    action: deny
  - name: store-client
    match: {path: /store, store: client}
    action: deny
    status: 451
  - name: by-san
    match: {path: /san, san: client.example}
    action: deny
  - name: by-sha
    match: {path: /sha, cert_sha256: "{{sha}}"}
    action: deny
  - name: by-agent
    match: {path: /agent, agent: "https://bot.example"}
    action: deny
  - name: sig-valid
    match: {path: /sig-valid, signature: valid}
    action: deny
  - name: sig-invalid
    match: {path: /sig-invalid, signature: invalid}
    action: deny
  - name: sig-none
    match: {path: /sig-none, signature: none}
    action: deny
  - name: same-bot
    match: {path: /same, identity_match: true}
    action: deny
  - name: other-bot
    match: {path: /same, identity_match: false}
    action: deny
    status: 409
  - name: need-cert
    match: {path: /need-cert}
    action: require
    what: cert
  - name: need-sig
    match: {path: /need-sig}
    action: require
    what: signature
  - name: need-both
    match: {path: /need-both}
    action: require
    what: both
  - name: slow
    match: {path: /slow}
    action: limit
    rate: 1/m
    burst: 2
`

// TestRulesEachKeyAndAction: each match key holds and fails to hold, each
// action answers as documented, a shadow rule lets the request go on; the
// access log names the rule and the action, and the metrics count them.
func TestRulesEachKeyAndAction(t *testing.T) {
	p, other := newPKI(t), newPKI(t)
	origin := echoOrigin(t)
	dir := t.TempDir()
	key, clientKey := filepath.Join(dir, "bot.key"), filepath.Join(dir, "client.key")
	run(t, nil, filepath.Join(binDir, "gencert"), "-signature-key", key)
	run(t, nil, filepath.Join(binDir, "gencert"), "-signature-key", clientKey)
	agents := fmt.Sprintf("https://bot.example %s.jwks\nhttps://client.example %s.jwks\n", key, clientKey)
	if err := os.WriteFile(filepath.Join(dir, "agents"), []byte(agents), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := freeAddr(t)
	conf := strings.NewReplacer("{{certs}}", p.dir, "{{origin}}", origin.URL, "{{dir}}", dir, "{{admin}}", admin,
		"{{sha}}", certSHA256Hex(t, p.f("client.crt"))).Replace(rulesConfig)
	file := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startBinary(t, "server", nil, listening, "-config", file)

	cert := []string{"-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key")}
	otherCert := []string{"-tlsflags", "80", "-cert", other.f("client.crt"), "-key", other.f("client.key")}
	bot := []string{"-sign-key", key, "-signature-agent", "https://bot.example"}
	sameBot := []string{"-sign-key", clientKey, "-signature-agent", "https://client.example"}
	untrusted := []string{"-sign-key", key, "-signature-agent", "https://stranger.example"}
	join := func(a ...[]string) []string {
		var out []string
		for _, x := range a {
			out = append(out, x...)
		}
		return out
	}
	// want: the status line; the body ("origin" for the origin's);
	// the rule and action the access log names ("" for none).
	for i, tc := range []struct {
		name, path string
		args       []string
		status     int
		body       string
		header     string // a field the answer must carry
		log        string
	}{
		{"Shadow", "/shadow", nil, 200, "origin", "", "shadow_rule=watch shadow_action=deny shadow_status=403"},
		{"Allow_StopsThere", "/open", nil, 200, "origin", "", "rule=open action=allow"},
		{"Method_Match", "/method -X POST -d x", nil, 405, "no posting here", "", "rule=by-method action=deny"},
		{"Method_NoMatch", "/method", nil, 200, "origin", "", ""},
		{"CertValid_Match", "/cert-valid", cert, 403, "denied by rule cert-valid", "", "rule=cert-valid action=deny"},
		{"CertValid_NoMatch", "/cert-valid", otherCert, 200, "origin", "", ""},
		{"CertInvalid_Match", "/cert-invalid", otherCert, 403, "denied by rule cert-invalid", "", "rule=cert-invalid action=deny"},
		{"CertInvalid_NoMatch", "/cert-invalid", nil, 200, "origin", "", ""},
		{"CertNone_Match", "/cert-none", nil, 403, "denied by rule cert-none", "", "rule=cert-none action=deny"},
		{"CertNone_NoMatch", "/cert-none", cert, 200, "origin", "", ""},
		{"Store_Client", "/store", cert, 451, "denied by rule store-client", "", "rule=store-client action=deny"},
		{"Store_NoCert", "/store", nil, 200, "origin", "", ""},
		{"San_Match", "/san", cert, 403, "denied by rule by-san", "", "rule=by-san action=deny"},
		{"San_InvalidCert", "/san", otherCert, 200, "origin", "", ""},
		{"Sha_Match", "/sha", cert, 403, "denied by rule by-sha", "", "rule=by-sha action=deny"},
		{"Sha_OtherCert", "/sha", otherCert, 200, "origin", "", ""},
		{"Agent_Match", "/agent", bot, 403, "denied by rule by-agent", "", "rule=by-agent action=deny"},
		{"Agent_OtherAgent", "/agent", sameBot, 200, "origin", "", ""},
		{"SigValid_Match", "/sig-valid", bot, 403, "denied by rule sig-valid", "", "rule=sig-valid action=deny"},
		{"SigValid_NoMatch", "/sig-valid", untrusted, 200, "origin", "", ""},
		{"SigInvalid_Match", "/sig-invalid", untrusted, 403, "denied by rule sig-invalid", "", "rule=sig-invalid action=deny"},
		{"SigInvalid_NoMatch", "/sig-invalid", bot, 200, "origin", "", ""},
		{"SigNone_Match", "/sig-none", cert, 403, "denied by rule sig-none", "", "rule=sig-none action=deny"},
		{"SigNone_NoMatch", "/sig-none", bot, 200, "origin", "", ""},
		{"IdentityMatch_True", "/same", join(cert, sameBot), 403, "denied by rule same-bot", "", "rule=same-bot action=deny"},
		{"IdentityMatch_False", "/same", join(cert, bot), 409, "denied by rule other-bot", "", "rule=other-bot action=deny"},
		{"IdentityMatch_CertOnly", "/same", cert, 200, "origin", "", ""},
		{"RequireCert_Missing", "/need-cert", nil, 401, "a client certificate is required", "", "rule=need-cert action=require"},
		{"RequireCert_Invalid", "/need-cert", otherCert, 403, "did not validate", "", "rule=need-cert action=require"},
		{"RequireCert_Valid", "/need-cert", cert, 200, "origin", "", "rule=need-cert action=require"},
		{"RequireSignature_Missing", "/need-sig", cert, 401, "signature is required", `Accept-Signature: sig1=("@authority" "signature-agent");created;expires;tag="web-bot-auth"`, "rule=need-sig action=require"},
		{"RequireSignature_Invalid", "/need-sig", untrusted, 403, "did not verify", "Accept-Signature: sig1=", "rule=need-sig action=require"},
		{"RequireSignature_Valid", "/need-sig", bot, 200, "origin", "", "rule=need-sig action=require"},
		{"RequireBoth_CertOnly", "/need-both", cert, 401, "both required", "Accept-Signature: sig1=", "rule=need-both action=require"},
		{"RequireBoth_Both", "/need-both", join(cert, sameBot), 200, "origin", "", "rule=need-both action=require"},
		{"Limit_1", "/slow", nil, 200, "origin", "", "rule=slow action=limit"},
		{"Limit_2", "/slow", nil, 200, "origin", "", "rule=slow action=limit"},
		// (Retry-After counts down from 60 as the bucket refills.)
		{"Limit_3", "/slow", nil, 429, "rule slow allows 1/m per identity", "Retry-After: ", "rule=slow action=limit"},
		{"Limit_OtherIdentity", "/slow", cert, 200, "origin", "", "rule=slow action=limit"},
	} {
		path, extra, _ := strings.Cut(tc.path, " ")
		args := append([]string{"-i", "-server-cacert", p.f("rootCA.crt")}, tc.args...)
		if extra != "" {
			args = append(args, strings.Fields(extra)...)
		}
		out, _ := runErr(nil, filepath.Join(binDir, "client"), append(args, "-connect", "https://"+addr+path)...)
		head, body, _ := strings.Cut(out, "\n\n")
		if !strings.HasPrefix(head, fmt.Sprintf("HTTP/2.0 %d ", tc.status)) {
			t.Errorf("%s: answered\n%s\nwant status %d", tc.name, out, tc.status)
			continue
		}
		if tc.body == "origin" {
			if !strings.HasPrefix(body, "status=ok\n") {
				t.Errorf("%s: not the origin's answer:\n%s", tc.name, out)
			}
		} else if !strings.Contains(body, tc.body) || strings.Contains(body, "status=ok") {
			t.Errorf("%s: body\n%s\nwant %q", tc.name, body, tc.body)
		}
		if tc.header != "" && !strings.Contains(head, tc.header) {
			t.Errorf("%s: header\n%s\nwant %s", tc.name, head, tc.header)
		}
		if tc.header == "Retry-After: " {
			_, after, _ := strings.Cut(head, "Retry-After: ")
			n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(after, "\n", 2)[0]))
			if err != nil || n < 1 || n > 60 {
				t.Errorf("%s: Retry-After %q, want 1 to 60 seconds (a token of a 1/m bucket)", tc.name, after)
			}
		}
		line := requestLine(t, filepath.Join(dir, "access.log"), i, path)
		if tc.log == "" {
			if strings.Contains(line, " rule=") || strings.Contains(line, "shadow_rule=") {
				t.Errorf("%s: no rule matched, but the access log says\n%s", tc.name, line)
			}
		} else if !strings.Contains(line, " "+tc.log+" ") && !strings.HasSuffix(line, " "+tc.log) {
			t.Errorf("%s: access log\n%s\nwant %s", tc.name, line, tc.log)
		}
	}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`reqmtls_rule_requests_total{action="deny",result="refused",rule="watch",shadow="true"} 1`,
		`reqmtls_rule_requests_total{action="allow",result="passed",rule="open",shadow="false"} 1`,
		`reqmtls_rule_requests_total{action="require",result="refused",rule="need-cert",shadow="false"} 2`,
		`reqmtls_rule_requests_total{action="require",result="passed",rule="need-cert",shadow="false"} 1`,
		`reqmtls_rule_requests_total{action="limit",result="passed",rule="slow",shadow="false"} 3`,
		`reqmtls_rule_requests_total{action="limit",result="refused",rule="slow",shadow="false"} 1`,
	} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// requestLine waits for the access log's n-th line (from 0), that of a
// request to path, and returns it. The log is written in batches: it polls
// until the line comes.
func requestLine(t *testing.T, file string, n int, path string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		data, _ := os.ReadFile(file)
		lines := strings.SplitAfter(string(data), "\n")
		if len(lines) > n && strings.HasSuffix(lines[n], "\n") {
			if !strings.Contains(lines[n], " path="+path+" ") {
				t.Fatalf("access log line %d is not for %s:\n%s", n, path, lines[n])
			}
			return strings.TrimSuffix(lines[n], "\n")
		}
	}
	t.Fatalf("no access log line %d (for %s) in %s", n, path, file)
	return ""
}

// TestLimitAdmits: a limit of 10/s with a burst of 5, under 50 requests a
// second for 5 seconds from one client, admits the burst and 10 a second:
// 55, within 15 %. Every refusal is a 429 with Retry-After.
func TestLimitAdmits(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "server.yaml")
	conf := fmt.Sprintf(`cert: %s
key: %s
listen_addr: 127.0.0.1:0
rules:
  - name: ten-a-second
    action: limit
    rate: 10/s
    burst: 5
`, p.f("server.crt"), p.f("server.key"))
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startBinary(t, "server", nil, listening, "-config", file)
	pool := x509.NewCertPool()
	root, err := os.ReadFile(p.f("rootCA.crt"))
	if err != nil || !pool.AppendCertsFromPEM(root) {
		t.Fatalf("roots: %v", err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	get := func() (int, string, error) {
		resp, err := c.Get("https://" + addr + "/")
		if err != nil {
			return 0, "", err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After"), nil
	}
	driveLimit(t, get, 10, 5)
}

// driveLimit sends a request with get 50 times a second for 5 seconds,
// each on its own goroutine (a slow answer does not hold the next), to a
// limit rule of rate a second and burst, and checks that what it admits
// is what one token bucket admits for the times the requests were sent,
// within 15 %: 5 + 10/s × 5 s = 55 when they go out on time, fewer when
// a loaded machine sends them late or in bunches.
func driveLimit(t *testing.T, get func() (int, string, error), rate float64, burst int) {
	t.Helper()
	const perSecond, seconds = 50, 5
	type answer struct {
		at     time.Time
		status int
		retry  string
		err    error
	}
	answers := make(chan answer, perSecond*seconds+1)
	tick := time.NewTicker(time.Second / perSecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	for start := time.Now(); ; {
		<-tick.C
		at := time.Now()
		if at.Sub(start) >= seconds*time.Second {
			break
		}
		wg.Go(func() {
			status, retry, err := get()
			answers <- answer{at, status, retry, err}
		})
	}
	wg.Wait()
	close(answers)
	var sent []time.Time
	admitted, refused := 0, 0
	for a := range answers {
		switch {
		case a.err != nil:
			t.Fatal(a.err)
		case a.status == http.StatusOK:
			admitted++
		case a.status == http.StatusTooManyRequests:
			refused++
			if a.retry == "" {
				t.Error("429 without Retry-After")
			}
		default:
			t.Fatalf("status %d", a.status)
		}
		sent = append(sent, a.at)
	}
	// One bucket, full at the first request, over the send times.
	slices.SortFunc(sent, func(a, b time.Time) int { return a.Compare(b) })
	tokens, last, want := float64(burst), sent[0], 0
	for _, at := range sent {
		tokens = min(float64(burst), tokens+at.Sub(last).Seconds()*rate)
		last = at
		if tokens >= 1 {
			tokens--
			want++
		}
	}
	t.Logf("%d requests sent at %d/s for %d s: %d admitted, %d refused with 429; one bucket of %v/s, burst %d, admits %d at those times",
		admitted+refused, perSecond, seconds, admitted, refused, rate, burst, want)
	if lo, hi := float64(want)*0.85, float64(want)*1.15; float64(admitted) < lo || float64(admitted) > hi {
		t.Errorf("admitted %d, want %d within 15 %% (%.0f to %.0f)", admitted, want, lo, hi)
	}
}
