package webbotauth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// The key directory (draft-meunier-webbotauth-httpsig-directory-00): a
// JWKS at a well-known path of the agent's origin, served with its own
// media type, each response signed by the keys it lists.
const (
	DirectoryPath      = "/.well-known/http-message-signatures-directory"
	DirectoryMediaType = "application/http-message-signatures-directory+json"
	DirectoryTag       = "http-message-signatures-directory"
)

// Bounds on fetching a directory.
const (
	maxDirectory     = 64 << 10
	fetchTimeout     = 5 * time.Second
	minCache         = time.Minute
	maxCache         = time.Hour
	defaultCache     = 5 * time.Minute
	retryAfterFailed = 30 * time.Second
	// directoryValidity is how long the signatures of a directory this
	// server serves are valid: clients cache it as long (max-age).
	directoryValidity = 5 * time.Minute
)

// DirectoryHandler serves the directory of keys: their public JWKS with
// the directory's media type, each response signed by every key (labels
// binding0, binding1, ..., covering the request's @authority, tag
// http-message-signatures-directory), cacheable as long as its
// signatures are valid. Keys are Ed25519 (request signing keys) or ECDSA
// P-256 (the key of the agent's TLS client certificate): each is listed
// as a public JWK of its RFC 7638 members only, and each signs, so the
// response vouches for every key it lists.
func DirectoryHandler(keys []crypto.Signer, now func() time.Time) (http.Handler, error) {
	if now == nil {
		now = time.Now
	}
	var b strings.Builder
	b.WriteString(`{"keys":[`)
	ids := make([]string, len(keys))
	algs := make([]string, len(keys))
	for i, k := range keys {
		j, err := httpsig.PublicJWK(k.Public())
		if err != nil {
			return nil, fmt.Errorf("directory key %d: %w", i+1, err)
		}
		if ids[i], err = httpsig.ThumbprintOf(k.Public()); err != nil {
			return nil, err
		}
		algs[i] = httpsig.AlgOf(k.Public())
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(j)
	}
	b.WriteString("]}\n")
	body := b.String()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		t := now()
		for i, k := range keys {
			p := httpsig.Params{Created: t, Expires: t.Add(directoryValidity), KeyID: ids[i], Alg: algs[i], Tag: DirectoryTag}
			if err := httpsig.SignInto(w.Header(), r, "binding"+strconv.Itoa(i), httpsig.NewCovered([]string{"@authority;req"}, p), k); err != nil {
				http.Error(w, "signing the directory: "+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.Header().Set("Content-Type", DirectoryMediaType)
		w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(int(directoryValidity.Seconds())))
		io.WriteString(w, body)
	}), nil
}

// ErrWithdrawn is a directory that answered 404 Not Found or 410 Gone: its
// agent withdrew it, and with it its keys.
var ErrWithdrawn = errors.New("the directory is withdrawn")

// FetchDirectory gets the directory of agent (its URL, as listed) with c,
// checks it, and returns the keys that signed its response and how long
// to keep them (Cache-Control max-age, within bounds). A directory counts
// only when a key it lists signed the response for this request (tag
// http-message-signatures-directory, the request's @authority covered,
// within its validity at now); a key it lists without signing is left
// out. Redirects are not followed.
func FetchDirectory(ctx context.Context, c *http.Client, agent string, now time.Time) (map[string]crypto.PublicKey, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	u := strings.TrimSuffix(agent, "/") + DirectoryPath
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return nil, 0, err
	}
	if req.URL.Scheme != "https" {
		return nil, 0, errors.New("directories are fetched over HTTPS only")
	}
	req.Header.Set("Accept", DirectoryMediaType)
	// Redirects are never followed (draft-meunier-webbotauth-httpsig-
	// directory-00, Security Considerations): the keys are the listed
	// origin's or none, never those of wherever it points, plain HTTP or
	// loopback included. A copy of c, so the caller's client is left as
	// it was.
	nc := *c
	nc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := nc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return nil, 0, fmt.Errorf("%s: %s: redirects are not followed for a key directory (to %q)", u, resp.Status, resp.Header.Get("Location"))
	}
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		return nil, 0, fmt.Errorf("%s: %s: %w", u, resp.Status, ErrWithdrawn)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("%s: %s", u, resp.Status)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != DirectoryMediaType && mt != "application/json" {
		return nil, 0, fmt.Errorf("%s: media type %q", u, mt)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDirectory+1))
	if err != nil {
		return nil, 0, err
	}
	if len(data) > maxDirectory {
		return nil, 0, fmt.Errorf("%s: larger than %d bytes", u, maxDirectory)
	}
	// The body is what Content-Digest says, when it says (RFC 9530): a
	// signature covering the digest then covers the keys themselves.
	if err := httpsig.CheckContentDigest(resp.Header, data); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", u, err)
	}
	keys, err := ParseJWKS(data)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", u, err)
	}
	vouched, err := vouchedKeys(req, &httpsig.Response{Status: resp.StatusCode, Header: resp.Header}, keys, now)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", u, err)
	}
	return vouched, cacheFor(resp.Header.Get("Cache-Control")), nil
}

// vouchedKeys returns the keys of the directory that signed its response
// (tag http-message-signatures-directory, the request's @authority
// covered, within its validity at now), and an error when none did. A key
// the directory lists but no valid signature of the response vouches for
// is left out (draft-meunier-webbotauth-httpsig-directory-00: such keys
// SHOULD be ignored): listing a key is not proof of holding it.
func vouchedKeys(req *http.Request, resp *httpsig.Response, keys map[string]crypto.PublicKey, now time.Time) (map[string]crypto.PublicKey, error) {
	sigs, err := httpsig.Parse(resp.Header)
	if err != nil {
		return nil, fmt.Errorf("directory signature: %w", err)
	}
	vouched := map[string]crypto.PublicKey{}
	var why error = errors.New("the directory is not signed by a key it lists")
	for _, label := range sortedLabels(sigs) {
		s := sigs[label]
		p := s.Params
		pub, ok := keys[p.KeyID]
		if p.Tag != DirectoryTag || !ok {
			continue
		}
		if p.Expires.IsZero() || now.After(p.Expires) || p.Created.After(now.Add(time.Minute)) || p.Created.After(p.Expires) {
			why = errors.New("the directory's signature has expired or is not yet valid")
			continue
		}
		// A response's signature: components with req from the
		// request, the others (content-digest) from the response
		// (RFC 9421, Section 2.4).
		if err := httpsig.VerifyResponse(req, resp, s, pub); err != nil {
			why = fmt.Errorf("directory signature: %w", err)
			continue
		}
		if !coversAuthority(s) {
			why = errors.New("the directory's signature does not cover @authority")
			continue
		}
		vouched[p.KeyID] = pub
	}
	if len(vouched) == 0 {
		return nil, why
	}
	return vouched, nil
}

func coversAuthority(s *httpsig.Signature) bool {
	for _, n := range s.Components() {
		if n == "@authority" {
			return true
		}
	}
	return false
}

// cacheFor reads max-age, bounded; no-store and no-cache keep the minimum.
func cacheFor(cc string) time.Duration {
	d := defaultCache
	for _, part := range strings.Split(cc, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch strings.ToLower(k) {
		case "max-age":
			if n, err := strconv.Atoi(strings.Trim(v, `"`)); err == nil {
				d = time.Duration(n) * time.Second
			}
		case "no-store", "no-cache":
			d = 0
		}
	}
	return min(max(d, minCache), maxCache)
}

// fetched is an agent whose keys come from its directory.
type fetched struct {
	keys       atomic.Pointer[heldKeys]
	ok, failed atomic.Int64 // fetches, by outcome
	// kicks asks the refresh loop to fetch now (VouchTLS, RefreshNow);
	// lastKick, under kickMu, bounds how often an unknown key does.
	kicks    chan struct{}
	kickMu   sync.Mutex
	lastKick time.Time
	// tried is closed once the first fetch has ended, well or not.
	tried     chan struct{}
	triedOnce sync.Once
}

// heldKeys are the keys of a directory's last good answer, in force until
// its cache lifetime and then the Verifier's MaxStale have passed.
type heldKeys struct {
	keys  map[string]crypto.PublicKey
	until time.Time
}

// AgentState is what metrics say of an agent.
type AgentState struct {
	URL                 string
	Fetched             bool // its keys come from its directory
	Keys                int  // keys in force
	FetchesOK, Failures int64
}

// Agents describes the agents, for metrics.
func (v *Verifier) Agents() []AgentState {
	out := make([]AgentState, len(v.cfg.Agents))
	for i, a := range v.cfg.Agents {
		out[i] = AgentState{URL: a.URL, Fetched: a.fetch != nil, Keys: len(a.keysAt(v.cfg.Now()))}
		if a.fetch != nil {
			out[i].FetchesOK, out[i].Failures = a.fetch.ok.Load(), a.fetch.failed.Load()
		}
	}
	return out
}

// Refresh fetches the directories of the agents listed without pinned
// keys, until ctx ends: at once, then when the last good answer's
// Cache-Control says, or 30 s after a failure. A directory answering 404
// or 410 is withdrawn: its keys go at once. Any other failure keeps the
// last good keys while their cache lifetime and then MaxStale last, and
// says so in the log.
func (v *Verifier) Refresh(ctx context.Context, c *http.Client, log *slog.Logger) {
	for _, a := range v.cfg.Agents {
		if a.fetch == nil {
			continue
		}
		go func() {
			for {
				next := v.refresh(ctx, c, a, log)
				a.fetch.triedOnce.Do(func() { close(a.fetch.tried) })
				select {
				case <-ctx.Done():
					return
				case <-time.After(next):
				case <-a.fetch.kicks:
				}
			}
		}()
	}
}

// FirstFetches waits until every fetched agent's first fetch since
// Refresh has ended, well or not, or ctx ends: a site that starts serving
// after it judges its first requests with its agents' keys in hand.
func (v *Verifier) FirstFetches(ctx context.Context) {
	for _, a := range v.cfg.Agents {
		if a.fetch == nil {
			continue
		}
		select {
		case <-a.fetch.tried:
		case <-ctx.Done():
			return
		}
	}
}

// refresh fetches a's directory once, and returns when to fetch it next.
func (v *Verifier) refresh(ctx context.Context, c *http.Client, a *Agent, log *slog.Logger) time.Duration {
	now := v.cfg.Now()
	keys, ttl, err := FetchDirectory(ctx, c, a.URL, now)
	switch {
	case errors.Is(err, ErrWithdrawn):
		a.fetch.failed.Add(1)
		held := len(a.keysAt(now))
		a.fetch.keys.Store(nil)
		log.Warn("key directory withdrawn; its keys are dropped", "agent", a.URL, "keys_dropped", held, "err", err, "retry_in", retryAfterFailed)
		if held > 0 {
			v.keysDropped(a.URL)
		}
		return retryAfterFailed
	case err != nil:
		a.fetch.failed.Add(1)
		held, until := 0, time.Time{}
		if h := a.fetch.keys.Load(); h != nil && now.Before(h.until) {
			held, until = len(h.keys), h.until
		}
		log.Warn("key directory fetch failed; keeping the last good keys", "agent", a.URL, "keys_kept", held, "kept_until", until, "err", err, "retry_in", retryAfterFailed)
		return retryAfterFailed
	}
	a.fetch.ok.Add(1)
	prev := a.keysAt(now)
	a.fetch.keys.Store(&heldKeys{keys: keys, until: now.Add(ttl + v.cfg.MaxStale)})
	log.Info("key directory fetched", "agent", a.URL, "keys", len(keys), "next_fetch_in", ttl)
	if dropped(prev, keys) {
		v.keysDropped(a.URL)
	}
	return ttl
}
