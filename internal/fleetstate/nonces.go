package fleetstate

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"time"

	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// Nonces is a webbotauth.NonceStore shared by the fleet: a nonce is set in
// Redis (SET NX with the time left until its expiry), once for every
// instance, and kept in a local store as well. A nonce either has seen is
// a replay. While Redis is down, or when a call fails or passes the
// timeout, the local store alone answers: it refuses the nonces this
// instance saw (before the outage too), not those another instance saw.
type Nonces struct {
	r     *Redis
	local webbotauth.NonceStore
}

// Nonces returns the fleet's nonce store, with local as its fallback
// (webbotauth.NewMemoryNonces, say).
func (r *Redis) Nonces(local webbotauth.NonceStore) *Nonces {
	return &Nonces{r: r, local: local}
}

// Seen implements webbotauth.NonceStore. It never fails because of Redis:
// an error is the local store's, while Redis cannot answer.
func (n *Nonces) Seen(ctx context.Context, key string, expiry time.Time) (bool, error) {
	seen, err := n.local.Seen(ctx, key, expiry)
	if !n.r.Up() {
		n.r.local()
		return seen, err
	}
	ttl := max(time.Until(expiry), time.Millisecond)
	var set bool
	if n.r.call(ctx, "nonce", func(ctx context.Context) error {
		var err error
		set, err = n.r.client.SetNX(ctx, n.r.key("nonce:", key), "1", ttl).Result()
		return err
	}) != nil {
		n.r.local()
		return seen, err
	}
	// Redis answered: a replay if it had the nonce, or if this instance
	// saw it while Redis was down (the local store's error, a nonce it
	// may have forgotten, counts for nothing then: Redis knows).
	return seen || !set, nil
}

// key is the Redis key of name in kind: the prefix, the kind, and the
// first 128 bits of name's SHA-256 (base64url), so that a key is 22 bytes
// after its kind whatever the length of what a client sent.
func (r *Redis) key(kind, name string) string {
	sum := sha256.Sum256([]byte(name))
	return r.prefix + kind + base64.RawURLEncoding.EncodeToString(sum[:16])
}
