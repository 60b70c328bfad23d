// Package webbotauth verifies Web Bot Auth signatures on requests
// (draft-meunier-webbotauth-httpsig-protocol-00, over HTTP Message
// Signatures, RFC 9421): which agent signed, with which key, checked
// against the agents a site trusts and only those.
package webbotauth

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/req-mtls/req-mtls/internal/deny"
	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// Tag is the tag parameter of a Web Bot Auth signature.
const Tag = "web-bot-auth"

// DefaultMaxStale is Config.MaxStale's default.
const DefaultMaxStale = time.Hour

// An Agent is a signer the site trusts: its URL, exactly as the agents file
// lists it, and the keys of its directory, by thumbprint.
type Agent struct {
	URL string
	// Keys are pinned keys; without them the keys come from the agent's
	// directory (Verifier.Refresh).
	Keys  map[string]crypto.PublicKey
	fetch *fetched
}

// NewFetchedAgent is an agent whose keys are fetched from its directory.
func NewFetchedAgent(url string) *Agent {
	return &Agent{URL: url, fetch: &fetched{kicks: make(chan struct{}, 1), tried: make(chan struct{})}}
}

// keysAt returns the agent's keys in force at now: pinned, or the last
// good ones fetched while they last (none before the first fetch, after a
// withdrawal, or once stale past the Verifier's MaxStale).
func (a *Agent) keysAt(now time.Time) map[string]crypto.PublicKey {
	if a.fetch == nil {
		return a.Keys
	}
	if h := a.fetch.keys.Load(); h != nil && now.Before(h.until) {
		return h.keys
	}
	return nil
}

// Result is the verdict on one request, made once.
type Result struct {
	// Status is "none" (no Web Bot Auth signature), "valid" or "invalid".
	Status string
	// Reason says why a signature is invalid.
	Reason string
	// Agent is the URL of the agent whose key verified, as listed; KeyID
	// the key's thumbprint.
	Agent, KeyID string
}

// Config configures a Verifier.
type Config struct {
	// Agents are the agents the site trusts.
	Agents []*Agent
	// Skew is how far created may be in the future and expires in the
	// past (default 1 minute); MaxValidity bounds expires - created
	// (default 1 hour).
	Skew, MaxValidity time.Duration
	// MaxStale is how long the last good keys of a fetched directory stay
	// in force past the cache lifetime of the answer that gave them,
	// while refreshes fail (default 1 hour): long enough to ride out an
	// outage of the agent's site, bounded so that keys it can no longer
	// vouch for do not last forever. A directory answering 404 or 410
	// has withdrawn its keys: they go at once.
	MaxStale time.Duration
	// Nonces remembers the nonces of the signatures that verified
	// (default: NewMemoryNonces(DefaultMaxNonces, Now)).
	Nonces NonceStore
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// A Verifier checks requests' signatures. It is safe for concurrent use.
type Verifier struct {
	cfg      Config
	byURL    map[string]*Agent
	nonces   NonceStore
	siteCert atomic.Pointer[func() *x509.Certificate]
	deny     atomic.Pointer[func() *deny.List]
	vouchState
}

// SetSiteCertificate gives the Verifier the site's certificate in force
// (f is called per request that needs it, and may return nil): besides
// the name a TLS connection was made for, the signed @authority may be
// any name it covers (a client reusing a connection for another name of
// the same certificate, RFC 9113, Section 9.1.1).
func (v *Verifier) SetSiteCertificate(f func() *x509.Certificate) { v.siteCert.Store(&f) }

// authorityHost is the host of r's authority, in lower case, without its
// port, brackets or a final dot.
func authorityHost(r *http.Request) string {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
}

// servedHere reports, for a request that came over TLS, whether its
// authority is a name the connection was made for: the SNI the client
// sent, or a name the site's certificate covers, or without either the
// connection's own address. A request in absolute form
// (https://other.example/) on a connection to this site names another
// site: a signature made for that site, replayed here, must not count as
// one made for this one. The port is not compared: a site behind a port
// mapping is reached on another port than it listens on. Without TLS
// (plain HTTP, or TLS ended before this server) there is no connection's
// name to compare with, and nothing is checked.
func (v *Verifier) servedHere(r *http.Request) bool {
	if r.TLS == nil {
		return true
	}
	host := authorityHost(r)
	if host == "" {
		return false
	}
	if sni := r.TLS.ServerName; sni != "" && strings.EqualFold(host, strings.TrimSuffix(sni, ".")) {
		return true
	}
	if f := v.siteCert.Load(); f != nil {
		if leaf := (*f)(); leaf != nil && leaf.VerifyHostname(host) == nil {
			return true
		}
	}
	if r.TLS.ServerName == "" {
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if ap, err := netip.ParseAddrPort(la.String()); err == nil {
				if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap() == ap.Addr().Unmap() {
					return true
				}
			}
		}
	}
	return false
}

// New returns a Verifier for cfg.
func New(cfg Config) *Verifier {
	if cfg.Skew <= 0 {
		cfg.Skew = time.Minute
	}
	if cfg.MaxValidity <= 0 {
		cfg.MaxValidity = time.Hour
	}
	if cfg.MaxStale <= 0 {
		cfg.MaxStale = DefaultMaxStale
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Nonces == nil {
		cfg.Nonces = NewMemoryNonces(DefaultMaxNonces, cfg.Now)
	}
	v := &Verifier{cfg: cfg, byURL: map[string]*Agent{}, nonces: cfg.Nonces}
	for _, a := range cfg.Agents {
		v.byURL[a.URL] = a
	}
	return v
}

// Verify decides on r: each signature tagged web-bot-auth is checked, in
// label order, and the first that is valid decides
// (draft-ietf-webbotauth-httpsig-protocol-01: every Web Bot Auth
// signature of a request is checked, so one an intermediary or a stranger
// added cannot void the bot's own); when none is valid, the reason is the
// first label's. RFC 9421 signatures with other tags are not Web Bot
// Auth's and are left alone.
func (v *Verifier) Verify(r *http.Request) Result {
	if len(r.Header.Values("Signature-Input")) == 0 {
		// Every RFC 9421 signature is described in Signature-Input. A
		// Signature field alone is another scheme's (the older
		// draft-cavage-http-signatures form, which some clients still
		// send): no Web Bot Auth signature, rather than a bad one.
		return Result{Status: "none"}
	}
	sigs, err := httpsig.Parse(r.Header)
	if err != nil {
		return invalid("malformed signature fields: " + err.Error())
	}
	var first *Result
	for _, label := range sortedLabels(sigs) {
		s := sigs[label]
		if s.Params.Tag != Tag {
			continue
		}
		res := v.check(r, s)
		if res.Status == "valid" {
			return res
		}
		if first == nil {
			first = &res
		}
	}
	if first == nil {
		return Result{Status: "none"}
	}
	return *first
}

// check decides on one Web Bot Auth signature of r.
func (v *Verifier) check(r *http.Request, s *httpsig.Signature) Result {
	agentURL, agentKey, err := signatureAgent(r.Header, s.Label)
	if err != nil {
		return invalid(err.Error())
	}
	// Coverage: the authority always, the agent when it was sent.
	if !s.Covers("@authority", "") {
		return invalid("@authority is not covered")
	}
	if agentURL != "" && !s.Covers("signature-agent", agentKey) {
		return invalid("Signature-Agent is sent but not covered")
	}
	// The authority covered must be this site's: a signature is made
	// for one site, and the connection says which site this is.
	if !v.servedHere(r) {
		return invalid(fmt.Sprintf("@authority %q is not a name this connection was made for", authorityHost(r)))
	}
	// Time.
	now := v.cfg.Now()
	p := s.Params
	switch {
	case p.Created.IsZero() || p.Expires.IsZero():
		return invalid("created and expires are required")
	case p.Created.After(p.Expires):
		// RFC 9421, Section 2.3: expires is when the signature stops
		// being valid; before its own creation it never was.
		return invalid("created after expires")
	case p.Created.After(now.Add(v.cfg.Skew)):
		return invalid("created in the future")
	case p.Expires.Before(now.Add(-v.cfg.Skew)):
		return invalid("expired")
	case p.Expires.Sub(p.Created) > v.cfg.MaxValidity:
		return invalid(fmt.Sprintf("valid for longer than %v", v.cfg.MaxValidity))
	case p.KeyID == "":
		return invalid("no keyid")
	}
	agent, pub, reason := v.key(agentURL, p.KeyID, now)
	if agent == nil {
		return invalid(reason)
	}
	if err := httpsig.Verify(r, s, pub); err != nil {
		return invalid(err.Error())
	}
	if l := v.denied(); l.Key(p.KeyID) || l.Agent(agent.URL) {
		// Revoked by the site, whatever the directory says.
		return invalid("denied")
	}
	// A nonce is good once within its signature's validity.
	valid := Result{Status: "valid", Agent: agent.URL, KeyID: p.KeyID}
	if p.Nonce != "" {
		ctx := WithPresumed(r.Context(), valid)
		replayed, err := v.nonces.Seen(ctx, p.KeyID+" "+p.Nonce, p.Expires.Add(v.cfg.Skew))
		if err != nil {
			return invalid("nonce not checked: " + err.Error())
		}
		if replayed {
			return invalid("nonce replayed")
		}
	}
	return valid
}

type presumedKey struct{}

// WithPresumed returns ctx telling a NonceStore's Seen the result its
// request has if the nonce is new (Presumed).
func WithPresumed(ctx context.Context, res Result) context.Context {
	return context.WithValue(ctx, presumedKey{}, res)
}

// Presumed returns, to a NonceStore's Seen, the result the request has if
// the nonce is new: its signature verified, its agent and key known. A
// store that does more for a request than keep its nonce (a fleet's, in
// the same round trip) decides by it.
func Presumed(ctx context.Context) (Result, bool) {
	res, ok := ctx.Value(presumedKey{}).(Result)
	return res, ok
}

// key finds the key keyid by the (agent, key) pair (draft-ietf-webbotauth-
// httpsig-protocol-01): the key of the agent Signature-Agent names, and
// of no other. Without Signature-Agent the key names its agent only when
// exactly one agent lists it: a key two agents list is credited to
// neither (whichever the file lists first would otherwise take the
// credit for the other's requests), and the reason says to send
// Signature-Agent.
func (v *Verifier) key(agentURL, keyid string, now time.Time) (*Agent, crypto.PublicKey, string) {
	if agentURL != "" {
		agent := v.byURL[agentURL]
		if agent == nil {
			return nil, nil, "agent not trusted: " + agentURL
		}
		pub, ok := agent.keysAt(now)[keyid]
		if !ok {
			return nil, nil, "unknown key for agent " + agent.URL
		}
		return agent, pub, ""
	}
	var agent *Agent
	var pub crypto.PublicKey
	for _, a := range v.cfg.Agents {
		if k, ok := a.keysAt(now)[keyid]; ok {
			if agent != nil {
				return nil, nil, "key listed by more than one agent: send Signature-Agent"
			}
			agent, pub = a, k
		}
	}
	if agent == nil {
		return nil, nil, "unknown key"
	}
	return agent, pub, ""
}

func invalid(reason string) Result { return Result{Status: "invalid", Reason: reason} }

func sortedLabels(m map[string]*httpsig.Signature) []string {
	labels := make([]string, 0, len(m))
	for l := range m {
		labels = append(labels, l)
	}
	slices.Sort(labels) // deterministic: the map lost Signature-Input's order
	return labels
}

// signatureAgent reads Signature-Agent in either spelling: the sf-string
// deployed signers send ("URL"), or the working group's dictionary keyed by
// signature label (label="URL"), whose member is covered with key=label.
// It returns the URL, and the key for coverage ("" for the string). A
// value of a type this verifier does not support, anything but a string
// holding an https URL (a data: URI carrying keys inline, a plain-HTTP
// URL, a token), is ignored, as draft-ietf-webbotauth-httpsig-protocol-01
// has verifiers do: the signature is then judged as if no Signature-Agent
// were sent for it ("", "", nil), its key naming its agent.
func signatureAgent(h http.Header, label string) (string, string, error) {
	values := h.Values("Signature-Agent")
	if len(values) == 0 {
		return "", "", nil
	}
	if it, err := httpsfv.UnmarshalItem(values); err == nil {
		if s, ok := it.Value.(string); ok {
			if !supportedAgent(s) {
				return "", "", nil
			}
			return s, "", nil
		}
	}
	d, err := httpsfv.UnmarshalDictionary(values)
	if err != nil {
		return "", "", errors.New("Signature-Agent is neither a string nor a dictionary")
	}
	m, ok := d.Get(label)
	if !ok {
		return "", "", fmt.Errorf("Signature-Agent has no member %q", label)
	}
	it, ok := m.(httpsfv.Item)
	s, isString := it.Value.(string)
	if !ok || !isString || !supportedAgent(s) {
		return "", "", nil
	}
	return s, label, nil
}

// supportedAgent reports whether a Signature-Agent value is one this
// verifier can use: an https URL, whose directory it would fetch.
func supportedAgent(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != ""
}

// ParseAgentsFile reads the agents a site trusts, one a line: "URL" (keys
// from its directory, fetched by Verifier.Refresh) or "URL JWKSFILE" (keys
// pinned in a JWKS file, the directory's format). # starts a comment.
func ParseAgentsFile(file string) ([]*Agent, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("signature agents: %w", err)
	}
	defer f.Close()
	var agents []*Agent
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		u, err := url.Parse(fields[0])
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("signature agents %q: line %d: %q is not an https:// URL", file, n, fields[0])
		}
		if seen[fields[0]] {
			return nil, fmt.Errorf("signature agents %q: line %d: %s listed twice", file, n, fields[0])
		}
		seen[fields[0]] = true
		if len(fields) == 1 {
			agents = append(agents, NewFetchedAgent(fields[0]))
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("signature agents %q: line %d: want URL, or URL JWKSFILE", file, n)
		}
		keys, err := LoadJWKS(fields[1])
		if err != nil {
			return nil, fmt.Errorf("signature agents %q: line %d: %w", file, n, err)
		}
		agents = append(agents, &Agent{URL: fields[0], Keys: keys})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(agents) == 0 {
		return nil, fmt.Errorf("signature agents %q: no agent listed", file)
	}
	return agents, nil
}

// LoadJWKS reads the Ed25519 keys of a JWKS file ({"keys": [...]}), by
// thumbprint; keys of other types are passed over.
func LoadJWKS(file string) (map[string]crypto.PublicKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	return ParseJWKS(data)
}

// ParseJWKS reads the keys of a JWKS that RFC 9421 algorithms use, by JWK
// thumbprint (RFC 7638): Ed25519 (OKP), ECDSA P-256 (EC) and RSA; keys of
// other types are passed over.
func ParseJWKS(data []byte) (map[string]crypto.PublicKey, error) {
	var set struct {
		Keys []struct{ Kty, Crv, X, Y, N, E string } `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("keys: not a JWKS: %v", err)
	}
	b64 := base64.RawURLEncoding.DecodeString
	keys := map[string]crypto.PublicKey{}
	for _, k := range set.Keys {
		var pub crypto.PublicKey
		var members string // the thumbprint's input: required members in order
		switch {
		case k.Kty == "OKP" && k.Crv == "Ed25519":
			x, err := b64(k.X)
			if err != nil || len(x) != ed25519.PublicKeySize {
				return nil, errors.New("keys: an Ed25519 key whose x is not 32 bytes of base64url")
			}
			pub = ed25519.PublicKey(x)
			members = `{"crv":"Ed25519","kty":"OKP","x":"` + k.X + `"}`
		case k.Kty == "EC" && k.Crv == "P-256":
			x, err1 := b64(k.X)
			y, err2 := b64(k.Y)
			if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
				return nil, errors.New("keys: a P-256 key whose x or y is not 32 bytes of base64url")
			}
			raw := append(append([]byte{4}, x...), y...)
			ek, err := ecdh.P256().NewPublicKey(raw) // checks the point is on the curve
			if err != nil {
				return nil, fmt.Errorf("keys: a P-256 key: %v", err)
			}
			pk, err := x509.ParsePKIXPublicKey(marshalECDH(ek))
			if err != nil {
				return nil, err
			}
			pub = pk
			members = `{"crv":"P-256","kty":"EC","x":"` + k.X + `","y":"` + k.Y + `"}`
		case k.Kty == "RSA":
			n, err1 := b64(k.N)
			e, err2 := b64(k.E)
			if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
				return nil, errors.New("keys: an RSA key whose n is under 2048 bits, or e malformed")
			}
			ev := 0
			for _, b := range e {
				ev = ev<<8 | int(b)
			}
			pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev}
			members = `{"e":"` + k.E + `","kty":"RSA","n":"` + k.N + `"}`
		default:
			continue
		}
		sum := sha256.Sum256([]byte(members))
		keys[base64.RawURLEncoding.EncodeToString(sum[:])] = pub
	}
	if len(keys) == 0 {
		return nil, errors.New("keys: no Ed25519, P-256 or RSA key")
	}
	return keys, nil
}

// marshalECDH writes an ECDH P-256 public key as a SubjectPublicKeyInfo,
// which x509 parses as an *ecdsa.PublicKey.
func marshalECDH(k *ecdh.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(k)
	return der
}

type resultKey struct{}

// WithResult returns r with res recorded in its context: the verdict is
// made once per request, and everything that reports on it reads it here.
func WithResult(r *http.Request, res Result) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), resultKey{}, res))
}

// ResultOf returns the verdict recorded on r, if one was.
func ResultOf(r *http.Request) (Result, bool) {
	res, ok := r.Context().Value(resultKey{}).(Result)
	return res, ok
}

// Middleware verifies each request's signature with v, records the
// verdict (ResultOf) and calls next.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, WithResult(r, v.Verify(r)))
	})
}
