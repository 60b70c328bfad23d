package gateway

import (
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

func TestSfString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", `"plain"`},
		{`x509: "bot root"`, `"x509: \"bot root\""`},
		{`back\slash`, `"back\\slash"`},
		{"new\nline", `"new\\nline"`},
		{"bücher", `"b\\u00fccher"`},
	} {
		if got := sfString(tc.in); got != tc.want {
			t.Errorf("sfString(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestStripSpoofable(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{"Client-Cert", "Client_cert", "CLIENT_CERT", "Bot-Identity", "bot_identity", "BOT_IDENTITY", "Client-Cert-Chain", "X-Forwarded-Client-Cert",
		"X_forwarded_for", "Forwarded", "Req-Mtls-Cert-Status", "Req_mtls_anything", "X-Real-Ip",
		"X-Ssl-Client-Verify", "X_SSL_CLIENT_S_DN", "Ssl_Client_Verify", "True-Client-Ip", "Cf-Connecting-Ip", "X-Forwarded-Client-Cert-Info",
		"X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info", "X-Client-Cert", "X_Client_Cert_Chain"} {
		h[name] = []string{"spoofed"}
	}
	h.Set("Accept", "*/*")
	h["Client-Certificate-Hint"] = []string{"kept: another field"}
	StripSpoofable(h)
	if len(h) != 2 || h.Get("Accept") != "*/*" || h.Get("Client-Certificate-Hint") == "" {
		t.Errorf("after stripping: %v", h)
	}
}

// TestNoFlagsNoField: RFC 8941 has no empty list; without flags the field
// is left out.
func TestNoFlagsNoField(t *testing.T) {
	h := http.Header{}
	Identity{}.Set(h, false, "")
	if v, ok := h[HeaderFlags]; ok {
		t.Errorf("%s: %q without flags, want no field", HeaderFlags, v)
	}
	h = http.Header{}
	Identity{Flags: []int{8, 80}}.Set(h, false, "")
	if v := h.Get(HeaderFlags); v != "8, 80" {
		t.Errorf("%s: %q, want \"8, 80\"", HeaderFlags, v)
	}
}

// spoofableByDefinition is isSpoofable's definition, on a normalised copy.
func spoofableByDefinition(name string) bool {
	n := normalise(name)
	if spoofable[n] {
		return true
	}
	for _, p := range spoofablePrefixes {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// TestIsSpoofable: the same answers as the definition, for short and long
// names, without allocating for the usual ones.
func TestIsSpoofable(t *testing.T) {
	long := strings.Repeat("x", 70)
	for _, name := range []string{"Client-Cert", "client_CERT", "Accept", "X-Forwarded-For", "X-Forwarded-Fo", "Req-Mtls-", "Req-Mtls",
		"req_mtls_x" + long, "Accept" + long, "", "Ssl-Client", "Ssl-Client-", "ÄClient-Cert", "X-Real-\u0130p", "Web-Bot-Auth-Status", "Signature"} {
		if got, want := isSpoofable(name), spoofableByDefinition(name); got != want {
			t.Errorf("isSpoofable(%q) = %v, want %v", name, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { isSpoofable("X-Forwarded-Client-Cert-Info") }); n != 0 {
		t.Errorf("isSpoofable allocates %v times", n)
	}
}

func FuzzIsSpoofable(f *testing.F) {
	f.Add("Client_Cert")
	f.Add("X-SSL-Client-S-DN")
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := isSpoofable(name), spoofableByDefinition(name); got != want {
			t.Errorf("isSpoofable(%q) = %v, want %v", name, got, want)
		}
	})
}

// BenchmarkIsSpoofable: the check on a name, and the definition it
// replaced (a lower-cased copy of the name).
func BenchmarkIsSpoofable(b *testing.B) {
	names := []string{"Accept", "Accept-Encoding", "User-Agent", "Sec-Ch-Ua", "Client-Cert", "X_ssl_client_verify"}
	for _, f := range []struct {
		name string
		fn   func(string) bool
	}{{"stack", isSpoofable}, {"copy", spoofableByDefinition}} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, n := range names {
					f.fn(n)
				}
			}
		})
	}
}

// TestAgentIdentity: a certificate an agent vouched for tells the origin
// store agent and the agent's URL, and Bot-Identity-Match compares that
// agent with the signature's, not DNS names (it has none).
func TestAgentIdentity(t *testing.T) {
	u, _ := url.Parse("https://bot.example/")
	leaf := &x509.Certificate{Raw: []byte("leaf"), URIs: []*url.URL{u}}
	d := &auth.Decision{Requested: true, Chain: []*x509.Certificate{leaf}, Verified: []*x509.Certificate{leaf}, Store: auth.StoreAgent, Agent: u.String()}
	h := http.Header{}
	Identity{Flags: []int{80}, Decision: d}.Set(h, false, "")
	if h.Get(HeaderCertStatus) != "valid" || h.Get(HeaderCertStore) != "agent" || h.Get(HeaderCertAgent) != `"https://bot.example/"` {
		t.Errorf("origin sees %v", h)
	}
	for agent, want := range map[string]string{"https://bot.example/": "?1", "https://other.example/": "?0"} {
		h := http.Header{}
		SetWebBotAuth(h, webbotauth.Result{Status: "valid", Agent: agent, KeyID: "k"}, d)
		if got := h.Get(HeaderSameBot); got != want {
			t.Errorf("signature by %s: Bot-Identity-Match %q, want %q", agent, got, want)
		}
	}
	// Bot-Identity names the agent that vouched, from the TLS layer alone.
	if got, want := BotIdentity(d, webbotauth.Result{Status: "none"}), `agent="https://bot.example/", layers=(tls)`; got != want {
		t.Errorf("Bot-Identity %q, want %q", got, want)
	}
	// A certificate of a CA store names no agent: no field.
	h = http.Header{}
	Identity{Decision: &auth.Decision{Chain: []*x509.Certificate{leaf}, Store: auth.StoreClient}}.Set(h, false, "")
	if v, ok := h[HeaderCertAgent]; ok {
		t.Errorf("a CA store's certificate sets %s: %v", HeaderCertAgent, v)
	}
}

// TestBotIdentity: the field for each combination of verified layers, as
// an RFC 9651 Dictionary.
func TestBotIdentity(t *testing.T) {
	leaf := &x509.Certificate{DNSNames: []string{"crawler.example", "other.example"}}
	noDNS := &x509.Certificate{}
	valid := &auth.Decision{Chain: []*x509.Certificate{leaf}}
	invalid := &auth.Decision{Chain: []*x509.Certificate{leaf}, Err: errors.New("unknown authority")}
	sig := webbotauth.Result{Status: "valid", Agent: "https://crawler.example/bot"}
	for _, tc := range []struct {
		name string
		d    *auth.Decision
		res  webbotauth.Result
		want string
	}{
		{"Nothing", nil, webbotauth.Result{}, ""},
		{"NoCert_NoSignature", &auth.Decision{}, webbotauth.Result{Status: "none"}, ""},
		{"InvalidCert_InvalidSignature", invalid, webbotauth.Result{Status: "invalid", Agent: "https://x.example"}, ""},
		{"CertOnly", valid, webbotauth.Result{Status: "none"}, `dns="crawler.example", layers=(tls)`},
		{"CertWithoutDNS", &auth.Decision{Chain: []*x509.Certificate{noDNS}}, webbotauth.Result{}, `layers=(tls)`},
		{"SignatureOnly", nil, sig, `agent="https://crawler.example/bot", layers=(signature)`},
		{"SignatureOnly_InvalidCert", invalid, sig, `agent="https://crawler.example/bot", layers=(signature)`},
		{"Both", valid, sig, `agent="https://crawler.example/bot", dns="crawler.example", layers=(tls signature)`},
		{"Escaped", &auth.Decision{Chain: []*x509.Certificate{{DNSNames: []string{"b\"ü\n"}}}}, webbotauth.Result{},
			`dns="b\"\\u00fc\\n", layers=(tls)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := BotIdentity(tc.d, tc.res); got != tc.want {
				t.Errorf("BotIdentity = %s, want %s", got, tc.want)
			}
		})
	}
}
