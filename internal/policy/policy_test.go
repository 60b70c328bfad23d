package policy

import (
	"fmt"
	"hash/maphash"
	"strings"
	"testing"
	"time"
)

// t0 is the clock the rules are decided at: the moment the tests start
// (the buckets only compare it with itself).
var t0 = time.Now()

func yes() *bool { b := true; return &b }

// A site's rules, one of each kind of action and most match keys.
var docRules = []Rule{
	{Name: "admin-needs-cert", Match: Match{Path: "/admin/"}, Action: "require", What: "cert"},
	{Name: "block-unknown-bots", Match: Match{Cert: "invalid"}, Action: "deny", Status: 451, Reason: "unknown bot"},
	{Name: "api-signed", Match: Match{Path: "/api/", Method: "POST"}, Action: "require", What: "signature"},
	{Name: "trace-partner", Match: Match{SAN: "crawler.partner.example"}, Action: "deny", Shadow: true},
	{Name: "slow-bots", Match: Match{Store: "bot"}, Action: "limit", Rate: "1/s", Burst: 2},
	{Name: "same-bot", Match: Match{IdentityMatch: yes(), Agent: "https://agent.example"}, Action: "allow"},
}

func TestDecide(t *testing.T) {
	e, probs := Compile(docRules, NewLocal(0))
	if probs != nil {
		t.Fatal(probs)
	}
	bot := Identity{Method: "GET", Path: "/", Cert: "valid", Store: "bot", HasCert: true, Names: []string{"crawler.partner.example"}, Signature: "none", Client: "192.0.2.1"}
	for _, tc := range []struct {
		name       string
		id         Identity
		rule       string
		status     int
		shadow     string
		acceptSig  bool
		bodyHasStr string
	}{
		{"NoRuleMatches", Identity{Method: "GET", Path: "/", Cert: "none", Signature: "none"}, "", 0, "", false, ""},
		{"Admin_NoCert", Identity{Method: "GET", Path: "/admin/x", Cert: "none", Signature: "none"}, "admin-needs-cert", 401, "", false, "client certificate is required"},
		{"Admin_InvalidCert", Identity{Method: "GET", Path: "/admin/x", Cert: "invalid", HasCert: true, Signature: "none"}, "admin-needs-cert", 403, "", false, "did not validate"},
		{"Admin_ValidCert", Identity{Method: "GET", Path: "/admin/x", Cert: "valid", HasCert: true, Signature: "none"}, "admin-needs-cert", 0, "", false, ""},
		{"InvalidCert_Denied", Identity{Method: "GET", Path: "/", Cert: "invalid", HasCert: true, Signature: "none"}, "block-unknown-bots", 451, "", false, "unknown bot"},
		{"APIPost_Unsigned", Identity{Method: "POST", Path: "/api/x", Cert: "none", Signature: "none"}, "api-signed", 401, "", true, "signature is required"},
		{"APIPost_BadSignature", Identity{Method: "POST", Path: "/api/x", Cert: "none", Signature: "invalid"}, "api-signed", 403, "", true, "did not verify"},
		{"APIGet_NotMatched", Identity{Method: "GET", Path: "/api/x", Cert: "none", Signature: "none"}, "", 0, "", false, ""},
		{"Partner_ShadowThenLimit", bot, "slow-bots", 0, "trace-partner", false, ""},
		{"SameBot", Identity{Method: "GET", Path: "/", Cert: "valid", Store: "client", HasCert: true, Agent: "https://agent.example", Signature: "valid", SameBot: 1}, "same-bot", 0, "", false, ""},
		{"DifferentBots", Identity{Method: "GET", Path: "/", Cert: "valid", Store: "client", HasCert: true, Agent: "https://agent.example", Signature: "valid", SameBot: -1}, "", 0, "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := e.Decide(&tc.id, t0)
			if v.Rule != tc.rule || v.Status != tc.status || v.Shadow != tc.shadow || v.AcceptSignature != tc.acceptSig || !strings.Contains(v.Body, tc.bodyHasStr) {
				t.Errorf("Decide = %+v; want rule %q status %d shadow %q accept-signature %v body with %q", v, tc.rule, tc.status, tc.shadow, tc.acceptSig, tc.bodyHasStr)
			}
		})
	}
}

func TestShadowWouldHaveDenied(t *testing.T) {
	e, _ := Compile([]Rule{{Name: "s", Action: "deny", Shadow: true}}, NewLocal(0))
	v := e.Decide(&Identity{Path: "/"}, t0)
	if v.Rule != "" || v.Status != 0 || v.Shadow != "s" || v.ShadowAction != Deny || v.ShadowStatus != 403 {
		t.Errorf("Decide = %+v; want no rule, shadow s that would have answered 403", v)
	}
}

func TestMatchKeys(t *testing.T) {
	id := Identity{Method: "GET", Path: "/a/b", Cert: "valid", Store: "client", HasCert: true, CertSHA256: [32]byte{1, 2, 3},
		Names: []string{"bot.example", "spiffe://example/bot"}, Agent: "https://bot.example", Signature: "valid", SameBot: 1}
	for _, tc := range []struct {
		m    Match
		want bool
	}{
		{Match{Path: "/a/"}, true}, {Match{Path: "/b"}, false},
		{Match{Method: "GET"}, true}, {Match{Method: "POST"}, false},
		{Match{Cert: "valid"}, true}, {Match{Cert: "none"}, false},
		{Match{Store: "client"}, true}, {Match{Store: "bot"}, false},
		{Match{SAN: "BOT.example"}, true}, {Match{SAN: "spiffe://example/bot"}, true}, {Match{SAN: "other.example"}, false},
		{Match{CertSHA256: "0102030000000000000000000000000000000000000000000000000000000000"}, true},
		{Match{CertSHA256: ":AQIDAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"}, true},
		{Match{CertSHA256: "ff02030000000000000000000000000000000000000000000000000000000000"}, false},
		{Match{Agent: "https://bot.example"}, true}, {Match{Agent: "https://other.example"}, false},
		{Match{Signature: "valid"}, true}, {Match{Signature: "none"}, false},
		{Match{IdentityMatch: yes()}, true}, {Match{IdentityMatch: new(bool)}, false},
		{Match{Path: "/a/", Method: "POST"}, false},
	} {
		e, probs := Compile([]Rule{{Name: "r", Match: tc.m, Action: "deny"}}, NewLocal(0))
		if probs != nil {
			t.Fatalf("%+v: %v", tc.m, probs)
		}
		if got := e.Decide(&id, t0).Rule == "r"; got != tc.want {
			t.Errorf("match %+v = %v, want %v", tc.m, got, tc.want)
		}
	}
}

// A limit of 10/s with a burst of 5, under 50 requests a second for 5
// seconds, admits the burst and then 10 a second: 55.
func TestLimitAdmits(t *testing.T) {
	e, _ := Compile([]Rule{{Name: "l", Action: "limit", Rate: "10/s", Burst: 5}}, NewLocal(0))
	id := Identity{Path: "/", Cert: "none", Signature: "none", Client: "192.0.2.7"}
	admitted, retry := 0, 0
	for i := range 250 {
		v := e.Decide(&id, t0.Add(time.Duration(i)*20*time.Millisecond))
		if v.Status == 0 {
			admitted++
		} else if v.Status != 429 || v.RetryAfter != 1 {
			t.Fatalf("request %d: %+v, want 429 with Retry-After 1", i, v)
		} else {
			retry++
		}
	}
	// 5 at once, then one token every 100 ms over the 4.98 s that the
	// last request is sent after the first: 5 + 49.
	if admitted != 54 || retry != 196 {
		t.Errorf("admitted %d, refused %d; want 54 and 196", admitted, retry)
	}
	other := Identity{Path: "/", Client: "192.0.2.8"}
	if v := e.Decide(&other, t0.Add(5*time.Second)); v.Status != 0 {
		t.Errorf("another client: %+v; want its own bucket", v)
	}
}

func TestCompileProblems(t *testing.T) {
	_, probs := Compile([]Rule{
		{Name: "a", Action: "allow"},
		{Name: "a", Action: "deny", Status: 200, What: "cert"},
		{Name: "", Action: "limit", Rate: "fast", Match: Match{Cert: "maybe", Path: "x"}},
		{Name: "r", Action: "require"},
		{Name: "q", Action: "block", Match: Match{CertSHA256: "abc"}},
		{Name: "t", Action: "requier", What: "cert"},
	}, NewLocal(0))
	var got []string
	for _, p := range probs {
		got = append(got, p.Error())
	}
	want := []string{
		`rules[1].name: "a" is also rule 0's name`,
		`rules[1].what: what goes with action require`,
		`rules[1].status: 200: a refusal's status is 400 to 599`,
		`rules[2].name: every rule needs a name`,
		`rules[2].match.cert: "maybe": want valid, invalid, none`,
		`rules[2].match.path: "x": a path prefix starts with /`,
		`rules[2].rate: "fast": want a rate such as 10/s or 600/m`,
		`rules[2].burst: a limit needs a burst of 1 or more`,
		`rules[3].what: require needs what: cert, signature or both`,
		`rules[4].match.cert_sha256: "abc": want a SHA-256 as 64 hex digits or :base64: (as the access log writes it)`,
		`rules[4].action: "block": want allow, deny, require or limit`,
		`rules[5].action: "requier": want allow, deny, require or limit`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// BenchmarkDecide: the rules' cost per request, none and 50 read to their
// last predicate (path, method and certificate hold, the name does not),
// as the gateway bench's "ours, 50 rules" has them.
func BenchmarkDecide(b *testing.B) {
	id := &Identity{Method: "GET", Path: "/some/page", Cert: "valid", Store: "client", Names: []string{"client.example"},
		HasCert: true, Signature: "none", Client: "127.0.0.1"}
	for _, n := range []int{0, 50} {
		rules := make([]Rule, n)
		for i := range rules {
			rules[i] = Rule{Name: fmt.Sprintf("rule-%d", i), Action: "deny",
				Match: Match{Path: "/", Method: "GET", Cert: "valid", SAN: fmt.Sprintf("bot-%d.example", i)}}
		}
		e, probs := Compile(rules, NewLocal(0))
		if probs != nil {
			b.Fatal(probs)
		}
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now()
			for b.Loop() {
				if v := e.Decide(id, now); v.Status != 0 {
					b.Fatalf("verdict %+v", v)
				}
			}
		})
	}
}

// TestLocalBound: past its bound, the local limiter drops buckets that are
// full again, then any, and never holds more than it may.
func TestLocalBound(t *testing.T) {
	l := NewLocal(16) // one bucket a shard
	count := func() int {
		n := 0
		for i := range l.shards {
			n += len(l.shards[i].buckets)
		}
		return n
	}
	for i := range 100 {
		l.Take(fmt.Sprint("k", i), 1, 1, t0)
		if n := count(); n > 16 {
			t.Fatalf("%d buckets after %d keys, want at most 16", n, i+1)
		}
	}
	// A key whose bucket was dropped starts full again: as good as new
	// only when it was full; here each was just emptied, so a taken
	// token of a key still held is refused.
	held := ""
	for i := range 100 {
		k := fmt.Sprint("k", i)
		s := &l.shards[maphash.String(l.seed, k)%uint64(len(l.shards))]
		if _, ok := s.buckets[k]; ok {
			held = k
			break
		}
	}
	if ok, wait := l.Take(held, 1, 1, t0); ok || wait <= 0 {
		t.Errorf("a held, emptied bucket: %v, %v; want refused with a wait", ok, wait)
	}
}

// recorder is a Limiter that records the takes asked of it and grants
// them.
type recorder struct{ takes []Take }

func (r *recorder) Take(key string, rate float64, burst int, _ time.Time) (bool, time.Duration) {
	r.takes = append(r.takes, Take{key, rate, burst})
	return true, 0
}

// TestPlan: Plan names the tokens Decide takes, in its order (shadow limits
// before the deciding one, none after it); given them taken in advance,
// Decide uses their answers and asks its limiter for none, each answer
// once.
func TestPlan(t *testing.T) {
	rules := []Rule{
		{Name: "watch", Match: Match{Signature: "valid"}, Action: "limit", Rate: "100/s", Burst: 100, Shadow: true},
		{Name: "admin", Match: Match{Path: "/admin/"}, Action: "deny"},
		{Name: "agents", Match: Match{Agent: "https://a.example"}, Action: "limit", Rate: "2/s", Burst: 3},
		{Name: "after", Action: "limit", Rate: "1/s", Burst: 1},
	}
	lim := &recorder{}
	e, probs := Compile(rules, lim)
	if probs != nil || !e.HasLimits() {
		t.Fatal(probs, e.HasLimits())
	}
	for _, tc := range []struct {
		name    string
		id      Identity
		limited bool // a limit decides
	}{
		{"ShadowAndLimit", Identity{Path: "/", Signature: "valid", Agent: "https://a.example"}, true},
		{"ShadowThenDeny", Identity{Path: "/admin/", Signature: "valid", Agent: "https://a.example"}, false},
		{"LastRule", Identity{Path: "/", Signature: "none", Client: "192.0.2.1"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim.takes = nil
			id := tc.id
			plan := e.Plan(&id)
			want := e.Decide(&id, t0)
			if fmt.Sprint(plan) != fmt.Sprint(lim.takes) {
				t.Fatalf("Plan = %v, Decide took %v", plan, lim.takes)
			}
			// Taken in advance: the last one refused.
			lim.takes = nil
			id.Advance = nil
			for i, p := range plan {
				id.Advance = append(id.Advance, Taken{Take: p, OK: i < len(plan)-1, Wait: 1500 * time.Millisecond})
			}
			v := e.Decide(&id, t0)
			if len(lim.takes) != 0 {
				t.Errorf("with the tokens taken in advance, Decide asked its limiter for %v", lim.takes)
			}
			if tc.limited && (v.Status != 429 || v.RetryAfter != 2) {
				t.Errorf("the deciding limit refused in advance: %+v, want 429, Retry-After 2", v)
			}
			if v.Rule != want.Rule || v.Shadow != want.Shadow {
				t.Errorf("Decide with tokens in advance: %+v, without: %+v", v, want)
			}
			// Each answer serves once: a second decision takes anew.
			e.Decide(&id, t0)
			if fmt.Sprint(lim.takes) != fmt.Sprint(plan) {
				t.Errorf("a second Decide with the answers used took %v, want %v", lim.takes, plan)
			}
		})
	}
	// A bucket of another rate (rules reloaded since) is taken anew.
	id := Identity{Path: "/", Signature: "valid", Agent: "https://a.example"}
	lim.takes = nil
	id.Advance = []Taken{{Take: Take{Key: "agents agent https://a.example", Rate: 5, Burst: 3}, OK: false}}
	if v := e.Decide(&id, t0); v.Status != 0 || len(lim.takes) != 2 {
		t.Errorf("a token taken in advance at another rate: %+v, limiter asked %v; want both taken anew", v, lim.takes)
	}
}

// TestCompileSitePrefix: two sites' rules of one name count apart on one
// limiter, and Plan names a site's buckets as Decide takes them.
func TestCompileSitePrefix(t *testing.T) {
	lim := NewLocal(0)
	rules := []Rule{{Name: "one", Action: "limit", Rate: "1/m", Burst: 1}}
	a, _ := Compile(rules, lim)
	b, _ := CompileSite(rules, lim, "site 1: ")
	id := Identity{Path: "/", Client: "192.0.2.1"}
	if va, vb := a.Decide(&id, t0), b.Decide(&id, t0); va.Status != 0 || vb.Status != 0 {
		t.Errorf("first requests at two sites: %d and %d, want both admitted (a bucket each)", va.Status, vb.Status)
	}
	if vb := b.Decide(&id, t0); vb.Status != 429 {
		t.Errorf("second request at site 1: %d, want 429", vb.Status)
	}
	if p := b.Plan(&id); len(p) != 1 || p[0].Key != "site 1: one addr 192.0.2.1" {
		t.Errorf("Plan at site 1 = %v, want the bucket \"site 1: one addr 192.0.2.1\"", p)
	}
}
