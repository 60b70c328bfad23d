package webbotauth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"net/http"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// TestNoncesExpireEachAtItsOwn: each nonce is remembered until its own
// expiry, at most a bound at once. When the store is full of nonces in
// force, the one that expires first is forgotten, never all of them, and
// until it expires, a nonce not remembered that expires no later is
// refused as one the store cannot tell from it: a replay of a forgotten
// nonce is never taken as a first use.
func TestNoncesExpireEachAtItsOwn(t *testing.T) {
	at := now
	c := NewMemoryNonces(3, func() time.Time { return at })
	const first, seen, full = "first use", "replay", "cannot tell"
	for _, tc := range []struct {
		at     int // seconds after now
		key    string
		expiry int // seconds after now
		want   string
		why    string
	}{
		{0, "a", 10, first, ""},
		{0, "b", 20, first, ""},
		{0, "c", 30, first, "the store is full"},
		{5, "a", 10, seen, "before its expiry"},
		{10, "a", 40, first, "at its expiry a is forgotten: room made, nothing in force goes"},
		{11, "d", 50, first, "full of nonces in force: b, the first to expire, goes"},
		{12, "c", 30, seen, "c, still in force, is kept"},
		{12, "b", 20, full, "b was forgotten before its expiry"},
		{12, "e", 15, full, "e expires before b does: it may be b for all the store knows"},
		{12, "f", 60, first, "f expires after every nonce forgotten; c goes"},
		{13, "c", 30, full, "c was forgotten before its expiry"},
		{41, "g", 70, first, "a expired and went: nothing in force goes"},
		{41, "h", 45, first, "full, h the first to expire: taken, and forgotten at once"},
		{42, "h", 45, full, "h was forgotten before its expiry"},
		{42, "d", 50, seen, "d is kept"},
		{42, "f", 60, seen, "f is kept"},
		{42, "g", 70, seen, "g is kept"},
	} {
		at = now.Add(time.Duration(tc.at) * time.Second)
		replayed, err := c.Seen(context.Background(), tc.key, now.Add(time.Duration(tc.expiry)*time.Second))
		got := first
		switch {
		case err != nil:
			got = full
		case replayed:
			got = seen
		}
		if got != tc.want {
			t.Errorf("at %ds, %s (expiring at %ds): %s (err %v), want %s: %s", tc.at, tc.key, tc.expiry, got, err, tc.want, tc.why)
		}
		if n := len(c.m); n > 3 {
			t.Errorf("at %ds, after %s: %d nonces held, more than the bound of 3", tc.at, tc.key, n)
		}
	}
}

// TestNonceStoreFull: through the Verifier, a replay of a nonce the
// store had to forget is refused, with a reason that says why, and a
// replay of one it kept is refused as a replay.
func TestNonceStoreFull(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	pub := k.Public().(ed25519.PublicKey)
	bot := &Agent{URL: "https://bot.example", Keys: map[string]crypto.PublicKey{httpsig.Thumbprint(pub): pub}}
	clock := func() time.Time { return now }
	v := New(Config{Agents: []*Agent{bot}, Now: clock, Nonces: NewMemoryNonces(1, clock)})
	sign := func(validity time.Duration) *http.Request {
		p, err := httpsig.BotParams(pub, now, validity)
		if err != nil {
			t.Fatal(err)
		}
		return signed(t, "site.example", k, bot.URL, false, p)
	}
	long, short := sign(2*time.Minute), sign(time.Minute)
	valid := Result{Status: "valid", Agent: bot.URL, KeyID: httpsig.Thumbprint(pub)}
	for _, tc := range []struct {
		name string
		r    *http.Request
		want Result
	}{
		{"LongLived", long, valid},
		{"ShortLivedFillsTheStore", short, valid},
		{"ShortLivedReplayed", short, invalid("nonce not checked: too many nonces in force")},
		{"LongLivedReplayed", long, invalid("nonce replayed")},
	} {
		if got := v.Verify(tc.r); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
