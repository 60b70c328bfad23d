// Package policy is a site's rules: named, ordered, first match wins, each a
// conjunction of simple predicates on what a request's connection (the
// handshake's decision) and its Web Bot Auth signature proved, and an
// action: allow, deny, require, or limit. A rule marked shadow only records
// what it would have done.
//
// The engine is pure: it takes a request's recorded Identity and returns a
// Verdict. It parses no certificate and touches no network; the one piece of
// state it reads, the token buckets of limit rules, is behind Limiter.
package policy

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A Rule is one entry of a site's rules, as the configuration file writes
// it.
type Rule struct {
	// Name names the rule in the access log and the metrics.
	Name string `yaml:"name"`
	// Match holds when every predicate given holds (none given: always).
	Match Match `yaml:"match"`
	// Action is allow, deny, require or limit.
	Action string `yaml:"action"`
	// Status is deny's status code (default 403), Reason its one-line
	// body (default "denied by rule NAME").
	Status int    `yaml:"status"`
	Reason string `yaml:"reason"`
	// What is require's: cert, signature or both.
	What string `yaml:"what"`
	// Rate ("10/s", "600/m") and Burst are limit's token bucket, one per
	// identity.
	Rate  string `yaml:"rate"`
	Burst int    `yaml:"burst"`
	// Shadow records what the rule would have done and goes on to the
	// next rule.
	Shadow bool `yaml:"shadow"`
}

// Match is a rule's predicates; every one given must hold.
type Match struct {
	Path       string `yaml:"path"`        // prefix of the request's path
	Method     string `yaml:"method"`      // GET, POST, ...
	Cert       string `yaml:"cert"`        // valid, invalid or none
	Store      string `yaml:"store"`       // client, bot or agent: the store a certificate was checked against
	SAN        string `yaml:"san"`         // a DNS or URI name of the validated certificate
	CertSHA256 string `yaml:"cert_sha256"` // SHA-256 of the certificate, hex or :base64:
	Agent      string `yaml:"agent"`       // the verified agent URL, from either layer
	Signature  string `yaml:"signature"`   // valid, invalid or none
	// IdentityMatch holds, true, when a certificate validated and a
	// signature verified and both name the same bot; false when both
	// verified and name different bots. Without both it holds neither way.
	IdentityMatch *bool `yaml:"identity_match"`
}

// Identity is what a request proved, as the server recorded it: the
// handshake's decision and the signature's verdict, read once.
type Identity struct {
	Method, Path string
	Cert         string   // valid, invalid or none
	Store        string   // client, bot or agent; "" without a certificate
	Names        []string // the DNS and URI names of the validated certificate
	CertSHA256   [32]byte // of the leaf's DER, when one came
	HasCert      bool
	Agent        string // the verified agent URL, from either layer
	Signature    string // valid, invalid or none
	// SameBot is 1 when both layers verified and name the same bot, -1
	// when they name different ones, 0 otherwise.
	SameBot int8
	// Client is the client's address, the limit key of last resort.
	Client string
	// Advance holds tokens taken ahead of the rules (see Advance): a limit
	// rule uses the one taken for its bucket instead of taking another.
	Advance []Taken
}

// limitKey is whom a limit rule's bucket counts: the agent when a layer
// verified one, else the validated certificate, else the client's address.
func (id *Identity) limitKey() string {
	switch {
	case id.Agent != "":
		return "agent " + id.Agent
	case id.HasCert && id.Cert == "valid":
		return "cert " + hex.EncodeToString(id.CertSHA256[:])
	}
	return "addr " + id.Client
}

// Action is what a rule does.
type Action uint8

const (
	Allow Action = iota
	Deny
	Require
	Limit
)

var actionNames = [...]string{Allow: "allow", Deny: "deny", Require: "require", Limit: "limit"}

func (a Action) String() string { return actionNames[a] }

// A Verdict is the engine's answer for one request.
type Verdict struct {
	// Rule names the rule that decided ("" when none matched: allow),
	// Action its action.
	Rule   string
	Action Action
	// Status is the status to answer with, 0 to let the request go on;
	// Body the one-line reason. RetryAfter (a limit's, in whole seconds)
	// and AcceptSignature (a require's) are fields to add.
	Status          int
	Body            string
	RetryAfter      int
	AcceptSignature bool
	// Shadow names the first shadow rule that matched, ShadowAction its
	// action and ShadowStatus what it would have answered (0: let go).
	Shadow       string
	ShadowAction Action
	ShadowStatus int
}

// Engine evaluates compiled rules. It is safe for concurrent use and never
// changes; a new set of rules is a new Engine.
type Engine struct {
	rules  []rule
	lim    Limiter
	limits bool // a rule limits
}

type rule struct {
	Rule
	action Action
	sha    [32]byte
	hasSHA bool
	rate   float64 // tokens per second
	bucket string  // the prefix of its buckets' keys: the rule's name
}

// A Problem is what is wrong with one key of one rule.
type Problem struct {
	Index int    // the rule's index
	Key   string // the key, as in the file: "action", "match.cert"
	Msg   string
}

func (p Problem) Error() string { return fmt.Sprintf("rules[%d].%s: %s", p.Index, p.Key, p.Msg) }

// Compile checks rules and returns their engine, with lim holding the
// buckets of limit rules (NewLocal's, say). Every problem is returned, each
// naming its rule and key.
func Compile(rules []Rule, lim Limiter) (*Engine, []Problem) {
	return CompileSite(rules, lim, "")
}

// CompileSite is Compile for one site of a server: the names of its limit
// rules' buckets start with prefix, apart from another site's.
func CompileSite(rules []Rule, lim Limiter, prefix string) (*Engine, []Problem) {
	var probs []Problem
	bad := func(i int, key, format string, a ...any) {
		probs = append(probs, Problem{i, key, fmt.Sprintf(format, a...)})
	}
	names := map[string]int{}
	e := &Engine{lim: lim}
	for i, r := range rules {
		c := rule{Rule: r}
		switch {
		case r.Name == "":
			bad(i, "name", "every rule needs a name")
		case strings.ContainsFunc(r.Name, func(c rune) bool { return c <= ' ' || c >= 0x7f || c == '"' || c == '\\' }):
			bad(i, "name", "%q: use letters, digits and punctuation, no spaces or quotes", r.Name)
		default:
			if j, dup := names[r.Name]; dup {
				bad(i, "name", "%q is also rule %d's name", r.Name, j)
			}
			names[r.Name] = i
		}
		m := r.Match
		oneOf := func(key, v string, allowed ...string) {
			if v == "" {
				return
			}
			for _, a := range allowed {
				if v == a {
					return
				}
			}
			bad(i, key, "%q: want %s", v, strings.Join(allowed, ", "))
		}
		oneOf("match.cert", m.Cert, "valid", "invalid", "none")
		oneOf("match.store", m.Store, "client", "bot", "agent")
		oneOf("match.signature", m.Signature, "valid", "invalid", "none")
		if m.Path != "" && !strings.HasPrefix(m.Path, "/") {
			bad(i, "match.path", "%q: a path prefix starts with /", m.Path)
		}
		if m.Method != "" && strings.ToUpper(m.Method) != m.Method {
			bad(i, "match.method", "%q: methods are upper case", m.Method)
		}
		if m.CertSHA256 != "" {
			sum, err := parseSHA256(m.CertSHA256)
			if err != nil {
				bad(i, "match.cert_sha256", "%v", err)
			}
			c.sha, c.hasSHA = sum, true
		}
		// (With an action of none of these names, the action's own
		// problem is the one to tell.)
		known := slices.Contains([]string{"allow", "deny", "require", "limit"}, r.Action)
		if known && r.Action != "deny" && (r.Status != 0 || r.Reason != "") {
			bad(i, "status", "status and reason go with action deny")
		}
		if known && r.Action != "require" && r.What != "" {
			bad(i, "what", "what goes with action require")
		}
		if known && r.Action != "limit" && (r.Rate != "" || r.Burst != 0) {
			bad(i, "rate", "rate and burst go with action limit")
		}
		switch r.Action {
		case "allow":
			c.action = Allow
		case "deny":
			c.action = Deny
			if r.Status == 0 {
				c.Status = 403
			} else if r.Status < 400 || r.Status > 599 {
				bad(i, "status", "%d: a refusal's status is 400 to 599", r.Status)
			}
			if c.Reason == "" {
				c.Reason = "denied by rule " + r.Name
			} else if strings.ContainsAny(c.Reason, "\r\n") {
				bad(i, "reason", "one line only")
			}
		case "require":
			c.action = Require
			switch r.What {
			case "cert", "signature", "both":
			case "":
				bad(i, "what", "require needs what: cert, signature or both")
			default:
				bad(i, "what", "%q: want cert, signature or both", r.What)
			}
		case "limit":
			c.action = Limit
			e.limits = true
			rate, err := ParseRate(r.Rate)
			if r.Rate == "" {
				bad(i, "rate", "a limit needs a rate, such as 10/s or 600/m")
			} else if err != nil {
				bad(i, "rate", "%v", err)
			}
			c.rate = rate
			if r.Burst < 1 {
				bad(i, "burst", "a limit needs a burst of 1 or more")
			}
		case "":
			bad(i, "action", "every rule needs an action: allow, deny, require or limit")
		default:
			bad(i, "action", "%q: want allow, deny, require or limit", r.Action)
		}
		c.bucket = prefix + r.Name + " "
		e.rules = append(e.rules, c)
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return e, nil
}

// ParseRate parses "N/s" or "N/m" (N a positive number) as tokens per
// second.
func ParseRate(s string) (float64, error) {
	num, unit, ok := strings.Cut(s, "/")
	per := map[string]float64{"s": 1, "m": 60}[unit]
	n, err := strconv.ParseFloat(num, 64)
	if !ok || per == 0 || err != nil || !(n > 0) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("%q: want a rate such as 10/s or 600/m", s)
	}
	return n / per, nil
}

// parseSHA256 reads a certificate hash as 64 hex digits or as the
// sf-binary Req-Mtls-Cert-Sha256 and the access log write (":base64:").
func parseSHA256(s string) ([32]byte, error) {
	var sum [32]byte
	var b []byte
	var err error
	if strings.HasPrefix(s, ":") && strings.HasSuffix(s, ":") && len(s) > 1 {
		b, err = base64.StdEncoding.DecodeString(s[1 : len(s)-1])
	} else {
		b, err = hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	}
	if err != nil || len(b) != len(sum) {
		return sum, fmt.Errorf("%q: want a SHA-256 as 64 hex digits or :base64: (as the access log writes it)", s)
	}
	copy(sum[:], b)
	return sum, nil
}

// Len is the number of rules.
func (e *Engine) Len() int { return len(e.rules) }

// Decide evaluates the rules in order for id at now: the first rule that
// matches and is not a shadow decides; a shadow rule that matches is
// recorded (the first one) and the evaluation goes on. No rule: allow.
func (e *Engine) Decide(id *Identity, now time.Time) Verdict {
	var v Verdict
	if e == nil {
		return v
	}
	for i := range e.rules {
		r := &e.rules[i]
		if !r.matches(id) {
			continue
		}
		out := e.apply(r, id, now)
		if r.Shadow {
			if v.Shadow == "" {
				v.Shadow, v.ShadowAction, v.ShadowStatus = r.Name, r.action, out.Status
			}
			continue
		}
		out.Shadow, out.ShadowAction, out.ShadowStatus = v.Shadow, v.ShadowAction, v.ShadowStatus
		return out
	}
	return v
}

// apply is what a matching rule does to the request.
func (e *Engine) apply(r *rule, id *Identity, now time.Time) Verdict {
	v := Verdict{Rule: r.Name, Action: r.action}
	switch r.action {
	case Deny:
		v.Status, v.Body = r.Status, r.Reason
	case Require:
		cert := r.What != "signature"
		sig := r.What != "cert"
		switch {
		case cert && id.Cert == "invalid", sig && id.Signature == "invalid":
			v.Status = 403
		case cert && id.Cert != "valid", sig && id.Signature != "valid":
			v.Status = 401
		default:
			return v
		}
		v.AcceptSignature = sig && id.Signature != "valid"
		v.Body = requireBody[r.What][v.Status == 403]
	case Limit:
		t := r.take(id)
		ok, wait, found := id.takeAdvanced(t)
		if !found {
			ok, wait = e.lim.Take(t.Key, t.Rate, t.Burst, now)
		}
		if !ok {
			v.Status, v.Body = 429, "too many requests: rule "+r.Name+" allows "+r.Rate+" per identity"
			v.RetryAfter = max(1, int(math.Ceil(wait.Seconds())))
		}
	}
	return v
}

// requireBody says what to send, by what is required and whether what came
// was invalid.
var requireBody = map[string]map[bool]string{
	"cert": {
		false: "a client certificate is required: set the request-mTLS flag and present a certificate this site trusts",
		true:  "the client certificate did not validate: present one this site trusts",
	},
	"signature": {
		false: "a Web Bot Auth signature is required: sign the request (RFC 9421) as Accept-Signature says",
		true:  "the Web Bot Auth signature did not verify: sign the request (RFC 9421) as Accept-Signature says",
	},
	"both": {
		false: "a client certificate and a Web Bot Auth signature are both required",
		true:  "the client certificate or the Web Bot Auth signature did not verify; both are required",
	},
}

// matches reports whether every predicate of r's match holds for id.
func (r *rule) matches(id *Identity) bool {
	m := &r.Match
	if m.Path != "" && !strings.HasPrefix(id.Path, m.Path) {
		return false
	}
	if m.Method != "" && m.Method != id.Method {
		return false
	}
	if m.Cert != "" && m.Cert != id.Cert {
		return false
	}
	if m.Store != "" && (!id.HasCert || m.Store != id.Store) {
		return false
	}
	if m.Signature != "" && m.Signature != id.Signature {
		return false
	}
	if m.Agent != "" && m.Agent != id.Agent {
		return false
	}
	if r.hasSHA && (!id.HasCert || r.sha != id.CertSHA256) {
		return false
	}
	if m.SAN != "" && !hasName(id.Names, m.SAN) {
		return false
	}
	if m.IdentityMatch != nil {
		want := int8(-1)
		if *m.IdentityMatch {
			want = 1
		}
		if id.SameBot != want {
			return false
		}
	}
	return true
}

// hasName reports whether names holds name; DNS names compare without
// regard to case.
func hasName(names []string, name string) bool {
	for _, n := range names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}
