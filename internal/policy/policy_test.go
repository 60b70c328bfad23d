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
