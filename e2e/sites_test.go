package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// siteOrigin is an origin that says which site it is.
func siteOrigin(t *testing.T, name string) *httptest.Server {
	t.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin=%s\nBot-Identity=%s\n", name, r.Header.Get("Bot-Identity"))
	}))
	t.Cleanup(origin.Close)
	return origin
}

// TestTwoSitesOnePort: two sites on one address, each with its own
// certificate, client CA, policy, origin and rules. SNI picks the site (the
// first when it names none); a request whose Host names the other site is
// refused with 421.
func TestTwoSitesOnePort(t *testing.T) {
	dir := t.TempDir()
	gencert := filepath.Join(binDir, "gencert")
	a, b := pki{filepath.Join(dir, "a")}, pki{filepath.Join(dir, "b")}
	run(t, nil, gencert, "-dir", a.dir, "-host", "a.example")
	run(t, nil, gencert, "-dir", b.dir, "-host", "b.example", "-ca-name", "b root")
	originA, originB := siteOrigin(t, "a"), siteOrigin(t, "b")
	conf := filepath.Join(dir, "sites.yaml")
	admin := freeAddr(t)
	if err := os.WriteFile(conf, []byte(strings.NewReplacer("{{a}}", a.dir, "{{b}}", b.dir, "{{oa}}", originA.URL, "{{ob}}", originB.URL, "{{admin}}", admin).Replace(`
listen_addr: 127.0.0.1:0
admin_addr: {{admin}}
sites:
  - hosts: [a.example]
    cert: {{a}}/server.crt
    key: {{a}}/server.key
    client_cacert: {{a}}/rootCA.crt
    upstream: {{oa}}
    rules:
      - name: a-private
        match: {path: /private, cert: none}
        action: deny
      - name: slow
        match: {path: /slow}
        action: limit
        rate: 1/m
        burst: 1
  - hosts: [b.example, "*.b.example"]
    cert: {{b}}/server.crt
    key: {{b}}/server.key
    client_cacert: {{b}}/rootCA.crt
    client_auth: verify
    upstream: {{ob}}
    rules:
      - name: b-needs-cert
        match: {path: /private}
        action: require
        what: cert
      - name: slow
        match: {path: /slow}
        action: limit
        rate: 1/m
        burst: 1
`)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startBinary(t, "server", nil, listening, "-config", conf)
	_, port, _ := strings.Cut(addr, ":")
	resolve := func(host string) []string { return []string{"--resolve", host + ":" + port + ":127.0.0.1"} }
	certOf := func(p pki) []string {
		return []string{"-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key")}
	}
	for _, tc := range []struct {
		name string
		args []string
		url  string
		want string // the status line and the body's first line, or the client's error
	}{
		{"SiteA", append(resolve("a.example"), "-server-cacert", a.f("rootCA.crt")), "https://a.example:PORT/", "200 origin=a"},
		{"SiteA_Rule", append(resolve("a.example"), "-server-cacert", a.f("rootCA.crt")), "https://a.example:PORT/private", "403 denied by rule a-private"},
		{"SiteA_CertOfA", append(append(resolve("a.example"), certOf(a)...), "-server-cacert", a.f("rootCA.crt")), "https://a.example:PORT/private", "200 origin=a"},
		{"NoSNI_FirstSite", []string{"-server-cacert", a.f("rootCA.crt")}, "https://127.0.0.1:PORT/", "200 origin=a"},
		{"UnknownSNI_FirstSite", []string{"-server-cacert", a.f("rootCA.crt"), "-servername", "localhost"}, "https://127.0.0.1:PORT/", "200 origin=a"},
		{"SiteB", append(resolve("b.example"), "-server-cacert", b.f("rootCA.crt")), "https://b.example:PORT/", "200 origin=b"},
		{"SiteB_Wildcard", append(resolve("www.b.example"), "-servername", "b.example", "-server-cacert", b.f("rootCA.crt")), "https://www.b.example:PORT/", "200 origin=b"},
		{"SiteB_Rule", append(resolve("b.example"), "-server-cacert", b.f("rootCA.crt")), "https://b.example:PORT/private", "401 a client certificate is required"},
		{"SiteB_CertOfB", append(append(resolve("b.example"), certOf(b)...), "-server-cacert", b.f("rootCA.crt")), "https://b.example:PORT/private", "200 origin=b"},
		// Site B verifies: a certificate of A's CA fails its handshake.
		{"SiteB_CertOfA", append(append(resolve("b.example"), certOf(a)...), "-server-cacert", b.f("rootCA.crt")), "https://b.example:PORT/", "error"},
		{"SNI_A_Host_B", append(resolve("b.example"), "-servername", "a.example", "-server-cacert", a.f("rootCA.crt")), "https://b.example:PORT/", "421 misdirected request"},
		{"SNI_B_Host_A", append(resolve("a.example"), "-servername", "b.example", "-server-cacert", b.f("rootCA.crt")), "https://a.example:PORT/", "421 misdirected request"},
		// Each site's limit counts on its own, rules of the same name
		// and one client.
		{"SiteA_Limit", append(resolve("a.example"), "-server-cacert", a.f("rootCA.crt")), "https://a.example:PORT/slow", "200 origin=a"},
		{"SiteB_Limit", append(resolve("b.example"), "-server-cacert", b.f("rootCA.crt")), "https://b.example:PORT/slow", "200 origin=b"},
		{"SiteA_Limit_Again", append(resolve("a.example"), "-server-cacert", a.f("rootCA.crt")), "https://a.example:PORT/slow", "429 too many requests"},
		{"SNI_B_Host_Unknown", append(resolve("c.example"), "-servername", "b.example", "-server-cacert", b.f("rootCA.crt")), "https://c.example:PORT/", "200 origin=b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"-i"}, tc.args...), "-connect", strings.ReplaceAll(tc.url, "PORT", port))
			out, err := runErr(nil, filepath.Join(binDir, "client"), args...)
			if tc.want == "error" {
				if err == nil || !strings.Contains(out, "client: error:") || strings.Contains(out, "origin=") {
					t.Errorf("want a failed handshake, got:\n%s", out)
				}
				return
			}
			head, body, _ := strings.Cut(out, "\n\n")
			status, _, _ := strings.Cut(strings.TrimPrefix(head, "HTTP/2.0 "), " ")
			first, _, _ := strings.Cut(body, "\n")
			if got := status + " " + first; !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q; answer:\n%s", got, tc.want, out)
			}
		})
	}
	// Each site's client CA is in the metrics.
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, root := range []string{"req-mtls development root", "b root"} {
		if want := `reqmtls_certificate_not_after_seconds{role="client_root",subject="CN=` + root; resp.StatusCode != 200 || !strings.Contains(string(metrics), want) {
			t.Errorf("metrics (status %d) lack %s", resp.StatusCode, want)
		}
	}
}
