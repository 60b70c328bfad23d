package webbotauth

import (
	"crypto/ed25519"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

var now = time.Unix(1800000000, 0)

// signed makes a request to host, signed by key as agent (dict: the
// dictionary spelling), with params p.
func signed(t *testing.T, host string, key ed25519.PrivateKey, agent string, dict bool, p httpsig.Params) *http.Request {
	t.Helper()
	r, _ := http.NewRequest("GET", "https://"+host+"/page", nil)
	components := []string{"@authority"}
	if agent != "" {
		if dict {
			r.Header.Set("Signature-Agent", "sig1="+strconv.Quote(agent))
			components = append(components, "signature-agent;key=sig1")
		} else {
			r.Header.Set("Signature-Agent", strconv.Quote(agent))
			components = append(components, "signature-agent")
		}
	}
	if err := httpsig.Sign(r, "sig1", httpsig.NewCovered(components, p), key); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerifier(t *testing.T) {
	_, botKey, _ := ed25519.GenerateKey(nil)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	_, strangerKey, _ := ed25519.GenerateKey(nil)
	bot := &Agent{URL: "https://bot.example", Keys: map[string]ed25519.PublicKey{httpsig.Thumbprint(botKey.Public().(ed25519.PublicKey)): botKey.Public().(ed25519.PublicKey)}}
	other := &Agent{URL: "https://other.example", Keys: map[string]ed25519.PublicKey{httpsig.Thumbprint(otherKey.Public().(ed25519.PublicKey)): otherKey.Public().(ed25519.PublicKey)}}
	params := func(k ed25519.PrivateKey) httpsig.Params {
		p, err := httpsig.BotParams(k.Public().(ed25519.PublicKey), now, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	v := New(Config{Agents: []*Agent{bot, other}, Now: func() time.Time { return now }})
	replay := signed(t, "site.example", botKey, bot.URL, false, params(botKey))
	for _, tc := range []struct {
		name string
		r    func() *http.Request
		want string // status, and the reason's start for invalid ones
	}{
		{"Unsigned", func() *http.Request { r, _ := http.NewRequest("GET", "https://site.example/", nil); return r }, "none"},
		{"ValidString", func() *http.Request { return signed(t, "site.example", botKey, bot.URL, false, params(botKey)) }, "valid https://bot.example"},
		{"ValidDictionary", func() *http.Request { return signed(t, "site.example", botKey, bot.URL, true, params(botKey)) }, "valid https://bot.example"},
		{"ValidNoAgentField", func() *http.Request { return signed(t, "site.example", otherKey, "", false, params(otherKey)) }, "valid https://other.example"},
		{"Expired", func() *http.Request {
			p := params(botKey)
			p.Created, p.Expires = now.Add(-time.Hour), now.Add(-10*time.Minute)
			return signed(t, "site.example", botKey, bot.URL, false, p)
		}, "invalid expired"},
		{"OtherAuthority", func() *http.Request {
			r := signed(t, "site.example", botKey, bot.URL, false, params(botKey))
			r.Host = "victim.example" // replayed to another site
			return r
		}, "invalid signature does not verify"},
		{"UnknownKey", func() *http.Request { return signed(t, "site.example", strangerKey, "", false, params(strangerKey)) }, "invalid unknown key"},
		{"UntrustedAgent", func() *http.Request {
			return signed(t, "site.example", strangerKey, "https://stranger.example", false, params(strangerKey))
		}, "invalid agent not trusted"},
		{"KeyUnderAnotherAgent", func() *http.Request { return signed(t, "site.example", botKey, other.URL, false, params(botKey)) }, "invalid unknown key for agent"},
		{"TamperedAgent", func() *http.Request {
			r := signed(t, "site.example", botKey, bot.URL, false, params(botKey))
			r.Header.Set("Signature-Agent", strconv.Quote(other.URL))
			return r
		}, "invalid unknown key for agent"},
		{"AgentNotCovered", func() *http.Request {
			r, _ := http.NewRequest("GET", "https://site.example/page", nil)
			httpsig.Sign(r, "sig1", httpsig.NewCovered([]string{"@authority"}, params(botKey)), botKey)
			r.Header.Set("Signature-Agent", strconv.Quote(bot.URL))
			return r
		}, "invalid Signature-Agent is sent but not covered"},
		{"FirstUseOfANonce", func() *http.Request { return replay }, "valid https://bot.example"},
		{"ReplayedNonce", func() *http.Request { return replay }, "invalid nonce replayed"},
		{"OtherTagIgnored", func() *http.Request {
			r, _ := http.NewRequest("GET", "https://site.example/page", nil)
			p := params(botKey)
			p.Tag = "something-else"
			httpsig.Sign(r, "sig1", httpsig.NewCovered([]string{"@authority"}, p), botKey)
			return r
		}, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := v.Verify(tc.r())
			got := res.Status
			switch res.Status {
			case "valid":
				got += " " + res.Agent
			case "invalid":
				got += " " + res.Reason
			}
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q...", got, tc.want)
			}
		})
	}
}
