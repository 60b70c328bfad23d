package fleetstate

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// Nonces is a webbotauth.NonceStore shared by the fleet: a nonce is set in
// Redis (SET NX with the time left until its expiry, in a script that
// takes the request's limit tokens too), once for every instance, and
// kept in a local store as well. A nonce either has seen is a replay.
// While Redis is down, or when a call fails or passes the timeout, the
// local store alone answers: it refuses the nonces this instance saw
// (before the outage too), not those another instance saw.
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
//
// When the request carries a policy.Advance and its nonce is new to this
// instance, the same round trip (one script) takes the limit tokens its
// rules will take if the signature is valid, after setting the nonce and
// only if it was new; the answers go to the Advance. A Cluster spreads
// the nonce and the buckets over its nodes, which one script cannot span:
// there the rules take their tokens in calls of their own.
func (n *Nonces) Seen(ctx context.Context, key string, expiry time.Time) (bool, error) {
	seen, err := n.local.Seen(ctx, key, expiry)
	if !n.r.Up() {
		n.r.local()
		return seen, err
	}
	ttl := max(time.Until(expiry), time.Millisecond)
	var adv *policy.Advance
	var takes []policy.Take
	if !seen && !n.r.cluster {
		if adv = policy.AdvanceOf(ctx); adv != nil && adv.Plan != nil && n.r.holds(adv.Limiter()) {
			if res, ok := webbotauth.Presumed(ctx); ok {
				takes = adv.Plan(res.Agent)
			}
		}
	}
	var set bool
	var taken []int64
	if n.r.call(ctx, "nonce", func(ctx context.Context) error {
		keys := make([]string, 0, 1+len(takes))
		args := make([]any, 0, 2+2*len(takes))
		keys = append(keys, n.r.key("nonce:", key))
		args = append(args, ttl.Milliseconds()+1, time.Now().UnixMicro())
		for _, t := range takes {
			keys = append(keys, n.r.key("limit:", t.Key))
			args = append(args, t.Rate, t.Burst)
		}
		res, err := n.r.pipe.do(ctx, nonceScript, keys, args...)
		if err == nil && (len(res) == 0 || res[0] == 1 && len(res) != 1+2*len(takes)) {
			err = fmt.Errorf("nonce script: %d values for %d buckets", len(res), len(takes))
		}
		if err == nil {
			set, taken = res[0] == 1, res[1:]
		}
		return err
	}) != nil {
		n.r.local()
		return seen, err
	}
	if set && len(taken) > 0 {
		adv.Taken = make([]policy.Taken, len(takes))
		for i, t := range takes {
			adv.Taken[i] = policy.Taken{Take: t, OK: taken[2*i] == 1, Wait: time.Duration(taken[2*i+1]) * time.Microsecond}
		}
	}
	// Redis answered: a replay if it had the nonce, or if this instance
	// saw it while Redis was down (the local store's error, a nonce it
	// may have forgotten, counts for nothing then: Redis knows).
	return seen || !set, nil
}

// holds reports whether lim's buckets are this Redis's (its Limiter), so
// that a nonce check may take their tokens; nil (an Advance made by hand)
// counts as this Redis's.
func (r *Redis) holds(lim policy.Limiter) bool {
	if lim == nil {
		return true
	}
	l, ok := lim.(*Limiter)
	return ok && l.r == r
}

// nonceScript sets a nonce (KEYS[1], for ARGV[1] milliseconds) if it is
// new and then only takes a token from each bucket KEYS[2], KEYS[3], ...
// (bucketLua at ARGV[2] µs, with rate and burst from ARGV[3] and ARGV[4],
// ARGV[5] and ARGV[6], ...). It returns {0} for a nonce Redis had, or {1}
// followed by each bucket's ok and wait. It is not all or nothing: a
// bucket key of another type fails the script after the nonce (and the
// buckets before it) were written; the request is then answered locally,
// as for any failed call.
var nonceScript = redis.NewScript(bucketLua + `
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
	return {0}
end
local out, now = {1}, tonumber(ARGV[2])
for i = 2, #KEYS do
	local ok, wait = take(KEYS[i], tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i]), now)
	out[#out+1] = ok
	out[#out+1] = wait
end
return out
`)

// key is the Redis key of name in kind: the prefix, the kind, and the
// first 128 bits of name's SHA-256 (base64url), so that a key is 22 bytes
// after its kind whatever the length of what a client sent.
func (r *Redis) key(kind, name string) string {
	sum := sha256.Sum256([]byte(name))
	return r.prefix + kind + base64.RawURLEncoding.EncodeToString(sum[:16])
}
