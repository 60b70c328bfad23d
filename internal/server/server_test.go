package server

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/testutil"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

type testServer struct {
	*Server
	url  *url.URL
	logs *testutil.Buffer
}

// startServer runs a server on 127.0.0.1 with a frozen clock.
func startServer(t *testing.T, p *testpki.PKI, cfg Config) *testServer {
	t.Helper()
	if cfg.Files.Cert == "" {
		cfg.Files = Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA}
	}
	logs := &testutil.Buffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return testpki.Now }
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(ln); close(done) }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		<-done
	})
	u, _ := url.Parse("https://" + ln.Addr().String() + "/debug")
	return &testServer{Server: s, url: u, logs: logs}
}

type outcome struct {
	hs     client.Handshake
	status int
	body   string
	err    error
}

// fetch makes one request to path with a new connection.
func fetch(t *testing.T, ts *testServer, p *testpki.PKI, cfg client.Config, path string) outcome {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	cfg.RootCAs = pool
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := *ts.url
	u.RawQuery = ""
	if before, q, ok := strings.Cut(path, "?"); ok {
		path, u.RawQuery = before, q
	}
	u.Path = path
	ctx := context.Background()
	cn, err := cl.Dial(ctx, &u)
	if err != nil {
		return outcome{err: err}
	}
	defer cn.Close()
	req, _ := http.NewRequest("GET", u.String(), nil)
	resp, body, err := cl.Do(ctx, cn, req, 1<<20)
	if err != nil {
		return outcome{hs: cn.Handshake, err: err}
	}
	return outcome{hs: cn.Handshake, status: resp.StatusCode, body: string(body)}
}

func withCert(p *testpki.PKI, name string, flags ...int) client.Config {
	cfg := client.Config{Time: testpki.Clock, Flags: tlsflags.Must(flags...)}
	if name != "" {
		cfg.CertFile, cfg.KeyFile = p.Clients[name][0], p.Clients[name][1]
	}
	return cfg
}

func debugText(flags string, requested, received bool, name string, validated bool) string {
	mutual := "[]"
	if strings.Contains(flags, "80") {
		mutual = "[80]"
	}
	s := "Client sent TLS Flags: " + flags + "\nMutually supported TLS Flags: " + mutual +
		"\nClient cert requested: " + tf(requested) + "\nPeer certificate received: " + tf(received) + "\n"
	if received {
		s += "Cert received: " + name + "\nCert validated: " + tf(validated) + "\n"
	}
	return s
}

func tf(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestGoldenDebug compares /debug byte for byte with the reference lines.
func TestGoldenDebug(t *testing.T) {
	p := testpki.New(t)
	ts := startServer(t, p, Config{})
	for _, tc := range []struct {
		name string
		cfg  client.Config
		want string
	}{
		{"FlagSent_CertGiven", withCert(p, "valid", 80),
			"Client sent TLS Flags: [80]\nMutually supported TLS Flags: [80]\nClient cert requested: true\nPeer certificate received: true\nCert received: client.example\nCert validated: true\n"},
		{"NoFlag", withCert(p, "valid"),
			"Client sent TLS Flags: []\nMutually supported TLS Flags: []\nClient cert requested: false\nPeer certificate received: false\n"},
		{"FlagSent_NoCert", withCert(p, "", 80),
			"Client sent TLS Flags: [80]\nMutually supported TLS Flags: [80]\nClient cert requested: true\nPeer certificate received: false\n"},
		{"OtherFlags", withCert(p, "", 8, 12, 170),
			"Client sent TLS Flags: [8 12 170]\nMutually supported TLS Flags: []\nClient cert requested: false\nPeer certificate received: false\n"},
		{"OtherFlagsAnd80", withCert(p, "valid", 170, 80, 8),
			"Client sent TLS Flags: [8 80 170]\nMutually supported TLS Flags: [80]\nClient cert requested: true\nPeer certificate received: true\nCert received: client.example\nCert validated: true\n"},
		{"BoringSSLCodepoint", client.Config{Time: testpki.Clock, Flags: tlsflags.Must(80), Codepoint: 62, CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1]},
			"Client sent TLS Flags: [80]\nMutually supported TLS Flags: [80]\nClient cert requested: true\nPeer certificate received: true\nCert received: client.example\nCert validated: true\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := fetch(t, ts, p, tc.cfg, "/debug")
			if o.err != nil {
				t.Fatal(o.err)
			}
			if o.body != tc.want {
				t.Errorf("/debug =\n%s\nwant\n%s", o.body, tc.want)
			}
			if o.hs.ALPN != "h2" || o.hs.Version != "TLS 1.3" {
				t.Errorf("negotiated %s over %s", o.hs.ALPN, o.hs.Version)
			}
		})
	}
}

// TestPolicies runs every policy against every kind of client. Outcomes
// are stated, one cell per policy (request, verify, require, always): the
// first character says whether a CertificateRequest came (+ or -), the
// second what followed: v served with a certificate that validated, i
// served with one that did not, n served without a certificate, R the
// handshake refused the certificate (bad_certificate), C the handshake
// required one (certificate_required).
func TestPolicies(t *testing.T) {
	p := testpki.New(t)
	type client struct {
		name     string
		cert     string
		flagged  bool
		tls12    bool
		certName string // as /debug prints it
		want     [4]string
	}
	clients := []client{
		{"NoFlag", "", false, false, "", [4]string{"-n", "-n", "-n", "+C"}},
		{"NoFlag_CertGiven", "valid", false, false, "client.example", [4]string{"-n", "-n", "-n", "+v"}},
		{"FlagSent_NoCert", "", true, false, "", [4]string{"+n", "+n", "+C", "+C"}},
		{"FlagSent_CertGiven", "valid", true, false, "client.example", [4]string{"+v", "+v", "+v", "+v"}},
		{"FlagSent_OtherCA", "other-ca", true, false, "client.example", [4]string{"+i", "+R", "+R", "+R"}},
		{"FlagSent_NoSAN", "no-san", true, false, "(no DNS name)", [4]string{"+i", "+R", "+R", "+R"}},
		{"FlagSent_Expired", "expired", true, false, "expired.example", [4]string{"+i", "+R", "+R", "+R"}},
		{"FlagSent_NotYetValid", "not-yet-valid", true, false, "future.example", [4]string{"+i", "+R", "+R", "+R"}},
		{"FlagSent_NoClientAuth", "no-clientauth", true, false, "server-only.example", [4]string{"+i", "+R", "+R", "+R"}},
		{"FlagSent_NoEKU", "no-eku", true, false, "no-eku.example", [4]string{"+i", "+R", "+R", "+R"}},
		{"FlagSent_AnyEKU", "any-eku", true, false, "any.example", [4]string{"+i", "+R", "+R", "+R"}},
		{"FlagSent_CAAsLeaf", "ca-as-leaf", true, false, "ca.example", [4]string{"+i", "+R", "+R", "+R"}},
		{"FlagSent_SelfSigned", "self-signed", true, false, "self.example", [4]string{"+i", "+R", "+R", "+R"}},
		{"FlagSent_ForgedName", "forged-name", true, false, `x\nCert validated: true`, [4]string{"+i", "+R", "+R", "+R"}},
		{"TLS12Only_CertGiven", "valid", false, true, "client.example", [4]string{"-n", "-n", "-n", "+v"}},
	}
	for i, policy := range []Policy{PolicyRequest, PolicyVerify, PolicyRequire, PolicyAlways} {
		ts := startServer(t, p, Config{Policy: policy})
		for _, c := range clients {
			t.Run(policy.String()+"/"+c.name, func(t *testing.T) {
				cfg := withCert(p, c.cert)
				if c.flagged {
					cfg.Flags = tlsflags.Must(80)
				}
				cfg.TLS12Only = c.tls12
				o := fetch(t, ts, p, cfg, "/debug")
				asked, result := c.want[i][0] == '+', c.want[i][1]
				if o.hs.CertRequested != asked && (o.err == nil || o.hs.Version != "") {
					t.Errorf("CertificateRequest %v, want %v", o.hs.CertRequested, asked)
				}
				switch result {
				case 'R', 'C':
					alert := map[byte]string{'R': "server rejected the client certificate: bad_certificate", 'C': "certificate_required"}[result]
					if o.err == nil {
						t.Fatalf("request succeeded, want %s; body:\n%s", alert, o.body)
					}
					if !strings.Contains(o.err.Error(), alert) {
						t.Errorf("error %q, want %s", o.err, alert)
					}
					return
				}
				if o.err != nil {
					t.Fatalf("request failed: %v", o.err)
				}
				flags := "[]"
				if c.flagged {
					flags = "[80]"
				}
				if want := debugText(flags, asked, result != 'n', c.certName, result == 'v'); o.body != want {
					t.Errorf("/debug =\n%s\nwant\n%s", o.body, want)
				}
				if c.tls12 && o.hs.Version != "TLS 1.2" {
					t.Errorf("version %s, want TLS 1.2", o.hs.Version)
				}
			})
		}
	}
}

// TestBotStore: flagged clients are checked against -bot-cacert only, and
// unflagged ones (under always) against -client-cacert only.
func TestBotStore(t *testing.T) {
	p := testpki.New(t)
	ts := startServer(t, p, Config{Policy: PolicyRequest, Files: Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA, BotCA: p.BotCA}})
	o := fetch(t, ts, p, withCert(p, "bot", 80), "/debug")
	if o.err != nil || !strings.HasSuffix(o.body, "Cert received: bot.example\nCert validated: true\n") {
		t.Fatalf("bot certificate: %v\n%s", o.err, o.body)
	}
	if !strings.Contains(strings.Join(o.hs.RequestedCAs, ";"), "bot root") || strings.Contains(strings.Join(o.hs.RequestedCAs, ";"), "test client root") {
		t.Errorf("CertificateRequest CA names %q, want the bot root only", o.hs.RequestedCAs)
	}
	o = fetch(t, ts, p, withCert(p, "valid", 80), "/debug")
	if o.err != nil || !strings.HasSuffix(o.body, "Cert validated: false\n") {
		t.Fatalf("client-CA certificate on a flagged connection: %v\n%s", o.err, o.body)
	}

	always := startServer(t, p, Config{Policy: PolicyAlways, Files: Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA, BotCA: p.BotCA}})
	if o := fetch(t, always, p, withCert(p, "bot"), "/debug"); o.err == nil {
		t.Error("unflagged client with a bot certificate accepted under always")
	}
	if o := fetch(t, always, p, withCert(p, "valid"), "/debug"); o.err != nil {
		t.Errorf("unflagged client with a client-CA certificate: %v", o.err)
	}
}

func TestDebugJSON(t *testing.T) {
	p := testpki.New(t)
	ts := startServer(t, p, Config{})
	o := fetch(t, ts, p, withCert(p, "no-san", 80), "/debug?format=json")
	if o.err != nil {
		t.Fatal(o.err)
	}
	var rep struct {
		ClientFlags []int  `json:"client_tls_flags"`
		Codepoint   string `json:"tls_flags_codepoint"`
		Version     string `json:"tls_version"`
		ALPN        string `json:"alpn"`
		Requested   bool   `json:"client_cert_requested"`
		Validated   *bool  `json:"cert_validated"`
		VerifyError string `json:"verify_error"`
		ClientHello struct {
			Versions []uint16 `json:"supported_versions"`
			Flags    []int    `json:"tls_flags"`
		} `json:"client_hello"`
		PeerChain []struct {
			Subject, Issuer, SHA256 string
		} `json:"peer_chain"`
	}
	if err := json.Unmarshal([]byte(o.body), &rep); err != nil {
		t.Fatalf("%v\n%s", err, o.body)
	}
	if fmt.Sprint(rep.ClientFlags) != "[80]" || rep.Codepoint != "0xfe01" || rep.Version != "TLS 1.3" ||
		rep.ALPN != "h2" || !rep.Requested || rep.Validated == nil || *rep.Validated ||
		rep.VerifyError != "client certificate has no DNS name" ||
		rep.ClientHello.Versions[0] != 0x0304 || fmt.Sprint(rep.ClientHello.Flags) != "[80]" ||
		len(rep.PeerChain) != 1 || rep.PeerChain[0].Subject != "CN=no-san" || len(rep.PeerChain[0].SHA256) != 64 {
		t.Errorf("unexpected report:\n%s", o.body)
	}
	// Accept: application/json works as well as ?format=json.
	if !wantsJSON(&http.Request{URL: &url.URL{}, Header: http.Header{"Accept": {"text/html, application/json;q=0.9"}}}) {
		t.Error("Accept: application/json not honoured")
	}
}

func TestIndexPage(t *testing.T) {
	p := testpki.New(t)
	ts := startServer(t, p, Config{})
	o := fetch(t, ts, p, client.Config{Time: testpki.Clock}, "/")
	if o.err != nil || o.status != 200 {
		t.Fatalf("index: %v %d", o.err, o.status)
	}
	for _, want := range []string{`<dd id="flags">[]</dd>`, `id="requested"><span class="no">no</span>`, `<dd id="version">TLS 1.3</dd>`, `<dd id="alpn">h2</dd>`} {
		if !strings.Contains(o.body, want) {
			t.Errorf("index lacks %s", want)
		}
	}
	if o := fetch(t, ts, p, client.Config{Time: testpki.Clock}, "/nothing"); o.status != 404 {
		t.Errorf("/nothing: status %d", o.status)
	}
}

const (
	PolicyRequest = auth.PolicyRequest
	PolicyVerify  = auth.PolicyVerify
	PolicyRequire = auth.PolicyRequire
	PolicyAlways  = auth.PolicyAlways
)

type Policy = auth.Policy

// TestRedirectKeepsToOwnNames: the port-80 redirect goes to a name of the
// server's, never to one only the request's Host chose.
func TestRedirectKeepsToOwnNames(t *testing.T) {
	p := testpki.New(t)
	ts := startServer(t, p, Config{})
	port := ts.url.Port()
	waitFor(t, "Serve to start", func() bool { return ts.httpsPort.Load() != nil })
	for host, want := range map[string]string{
		"evil.example":      "https://localhost:" + port + "/x?y=1",
		"evil.example:80":   "https://localhost:" + port + "/x?y=1",
		"LOCALHOST":         "https://localhost:" + port + "/x?y=1",
		"localhost:8080":    "https://localhost:" + port + "/x?y=1",
		"127.0.0.1":         "https://localhost:" + port + "/x?y=1",
		"localhost.evil.io": "https://localhost:" + port + "/x?y=1",
	} {
		r := httptest.NewRequest("GET", "http://"+host+"/x?y=1", nil)
		r.Host = host
		w := httptest.NewRecorder()
		ts.HTTPHandler().ServeHTTP(w, r)
		if got := w.Header().Get("Location"); w.Code != http.StatusMovedPermanently || got != want {
			t.Errorf("Host %q: %d to %q, want 301 to %q", host, w.Code, got, want)
		}
	}
}
