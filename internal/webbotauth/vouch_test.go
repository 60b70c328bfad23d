package webbotauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/deny"
	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// TestDeniedSignature: a signature by a key or an agent the deny list
// names is invalid, reason "denied", though it verifies.
func TestDeniedSignature(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	pub := k.Public().(ed25519.PublicKey)
	id := httpsig.Thumbprint(pub)
	bot := &Agent{URL: "https://bot.example", Keys: map[string]crypto.PublicKey{id: pub}}
	v := New(Config{Agents: []*Agent{bot}, Now: func() time.Time { return now }})
	for _, c := range []struct{ list, want string }{
		{"# nothing\n", "valid"},
		{"jwk:" + id + "\n", "invalid"},
		{"agent:https://bot.example\n", "invalid"},
		{"agent:https://other.example\n", "valid"},
	} {
		l, err := deny.Parse([]byte(c.list))
		if err != nil {
			t.Fatal(err)
		}
		v.SetDenyList(func() *deny.List { return l })
		p, err := httpsig.BotParams(pub, now, time.Minute) // a nonce of its own
		if err != nil {
			t.Fatal(err)
		}
		got := v.Verify(signed(t, "site.example", k, bot.URL, true, p))
		if got.Status != c.want || (c.want == "invalid" && got.Reason != "denied") {
			t.Errorf("deny list %q: got %+v, want %s", c.list, got, c.want)
		}
	}
}

// TestVouchTLS: a trusted agent vouches for a TLS key its directory lists;
// an unknown key asks for one refresh at once (so a key just added is
// found without waiting for the cache lifetime), and no second one within
// the interval, however many handshakes ask; an agent not listed is
// auth.ErrNotAgent.
func TestVouchTLS(t *testing.T) {
	_, sk, _ := ed25519.GenerateKey(nil)
	tk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var listed atomic.Pointer[[]crypto.Signer]
	listed.Store(&[]crypto.Signer{sk})
	var fetches atomic.Int64
	dir := directoryServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		dirHandler(t, *listed.Load()...).ServeHTTP(w, r)
	}))
	clock := time.Now()
	var offset atomic.Int64
	v := New(Config{Agents: []*Agent{NewFetchedAgent(dir.URL)}, Now: func() time.Time { return clock.Add(time.Duration(offset.Load())) }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Refresh(ctx, dir.Client(), slog.New(slog.DiscardHandler))
	waitUntil(t, "the first fetch", func() bool { return v.Agents()[0].FetchesOK == 1 })

	if err := v.VouchTLS("https://stranger.example", &tk.PublicKey); !errors.Is(err, auth.ErrNotAgent) {
		t.Errorf("an agent not listed: %v, want ErrNotAgent", err)
	}
	// The agent adds the key; the site's cache does not have it yet.
	listed.Store(&[]crypto.Signer{sk, tk})
	if err := v.VouchTLS(dir.URL, &tk.PublicKey); err == nil || !strings.Contains(err.Error(), "not in the agent's directory") {
		t.Fatalf("a key not fetched yet: %v", err)
	}
	waitUntil(t, "the refresh an unknown key asks for", func() bool { return v.VouchTLS(dir.URL, &tk.PublicKey) == nil })
	if n := fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	// Within the interval, unknown keys ask for nothing more.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for range 100 {
		v.VouchTLS(dir.URL, &other.PublicKey)
	}
	offset.Store(int64(kickInterval / 2))
	v.VouchTLS(dir.URL, &other.PublicKey)
	// Past it, one more.
	offset.Store(int64(kickInterval + time.Second))
	v.VouchTLS(dir.URL, &other.PublicKey)
	waitUntil(t, "the next refresh", func() bool { return fetches.Load() == 3 })
	if n := fetches.Load(); n != 3 {
		t.Errorf("%d fetches, want 3", n)
	}
}

// TestKeysDroppedHook: a refresh that takes away a key in force calls the
// hooks (the site rechecks open connections); one that keeps them all
// does not.
func TestKeysDroppedHook(t *testing.T) {
	_, a, _ := ed25519.GenerateKey(nil)
	_, b, _ := ed25519.GenerateKey(nil)
	var listed atomic.Pointer[[]crypto.Signer]
	listed.Store(&[]crypto.Signer{a, b})
	dir := directoryServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dirHandler(t, *listed.Load()...).ServeHTTP(w, r)
	}))
	v := New(Config{Agents: []*Agent{NewFetchedAgent(dir.URL)}})
	var dropped atomic.Int64
	v.OnKeysDropped(func(agent string) {
		if agent == dir.URL {
			dropped.Add(1)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Refresh(ctx, dir.Client(), slog.New(slog.DiscardHandler))
	waitUntil(t, "the first fetch", func() bool { return v.Agents()[0].FetchesOK == 1 })
	v.RefreshNow()
	waitUntil(t, "a second fetch", func() bool { return v.Agents()[0].FetchesOK == 2 })
	if n := dropped.Load(); n != 0 {
		t.Errorf("hooks called %d times for a refresh that dropped nothing", n)
	}
	listed.Store(&[]crypto.Signer{a})
	v.RefreshNow()
	waitUntil(t, "the hook", func() bool { return dropped.Load() == 1 })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
