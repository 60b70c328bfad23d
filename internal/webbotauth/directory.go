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

// FetchDirectory gets the directory of agent (its URL, as listed) with c,
// checks it, and returns its keys and how long to keep them (Cache-Control
// max-age, within bounds). A directory counts only when a key it lists
// signed the response for this request (tag
// http-message-signatures-directory, the request's @authority covered,
// within its validity at now).
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
	resp, err := c.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
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
	keys, err := ParseJWKS(data)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", u, err)
	}
	if err := checkDirectorySignature(req, resp.Header, keys, now); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", u, err)
	}
	return keys, cacheFor(resp.Header.Get("Cache-Control")), nil
}

// checkDirectorySignature requires one signature of the response, by a key
// of the directory, that verifies.
func checkDirectorySignature(req *http.Request, h http.Header, keys map[string]crypto.PublicKey, now time.Time) error {
	sigs, err := httpsig.Parse(h)
	if err != nil {
		return fmt.Errorf("directory signature: %w", err)
	}
	var why error = errors.New("the directory is not signed by a key it lists")
	for _, s := range sigs {
		p := s.Params
		pub, ok := keys[p.KeyID]
		if p.Tag != DirectoryTag || !ok {
			continue
		}
		if p.Expires.IsZero() || now.After(p.Expires) || p.Created.After(now.Add(time.Minute)) {
			why = errors.New("the directory's signature has expired or is not yet valid")
			continue
		}
		if err := httpsig.Verify(req, s, pub); err != nil {
			why = fmt.Errorf("directory signature: %w", err)
			continue
		}
		if !coversAuthority(s) {
			why = errors.New("the directory's signature does not cover @authority")
			continue
		}
		return nil
	}
	return why
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
	keys       atomic.Pointer[map[string]crypto.PublicKey]
	ok, failed atomic.Int64 // fetches, by outcome
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
		out[i] = AgentState{URL: a.URL, Fetched: a.fetch != nil, Keys: len(a.keysNow())}
		if a.fetch != nil {
			out[i].FetchesOK, out[i].Failures = a.fetch.ok.Load(), a.fetch.failed.Load()
		}
	}
	return out
}

// Refresh fetches the directories of the agents listed without pinned
// keys, until ctx ends: at once, then when the last good answer's
// Cache-Control says, or 30 s after a failure; a failure keeps the last
// good keys, and says so in the log.
func (v *Verifier) Refresh(ctx context.Context, c *http.Client, log *slog.Logger) {
	for _, a := range v.cfg.Agents {
		if a.fetch == nil {
			continue
		}
		go func() {
			for {
				keys, ttl, err := FetchDirectory(ctx, c, a.URL, v.cfg.Now())
				next := ttl
				if err != nil {
					a.fetch.failed.Add(1)
					next = retryAfterFailed
					held := 0
					if k := a.fetch.keys.Load(); k != nil {
						held = len(*k)
					}
					log.Warn("key directory fetch failed; keeping the last good keys", "agent", a.URL, "keys_kept", held, "err", err, "retry_in", next)
				} else {
					a.fetch.ok.Add(1)
					a.fetch.keys.Store(&keys)
					log.Info("key directory fetched", "agent", a.URL, "keys", len(keys), "next_fetch_in", next)
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(next):
				}
			}
		}()
	}
}
