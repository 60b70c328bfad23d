package webbotauth

import (
	"context"
	"sync"
	"time"
)

// A NonceStore remembers the nonces of the signatures that verified, each
// until its signature expires, so that a nonce is good once within its
// signature's validity. Implementations are safe for concurrent use. A
// Verifier keeps its own MemoryNonces unless Config.Nonces gives another
// (a store a fleet shares).
type NonceStore interface {
	// Seen records key as used until expiry, and reports whether it
	// already was: a replay. An error means the store cannot tell; the
	// signature is then not taken as valid.
	Seen(ctx context.Context, key string, expiry time.Time) (bool, error)
}

// DefaultMaxNonces is how many nonces a Verifier's own MemoryNonces holds.
const DefaultMaxNonces = 100000

// MemoryNonces is a NonceStore in this process, of at most a bound of
// nonces.
type MemoryNonces struct {
	max int
	now func() time.Time
	mu  sync.Mutex
	m   map[string]time.Time // key -> expiry
}

// NewMemoryNonces returns an empty MemoryNonces holding at most max nonces
// (DefaultMaxNonces when max <= 0), on the clock now (time.Now when nil).
func NewMemoryNonces(max int, now func() time.Time) *MemoryNonces {
	if max <= 0 {
		max = DefaultMaxNonces
	}
	if now == nil {
		now = time.Now
	}
	return &MemoryNonces{max: max, now: now, m: map[string]time.Time{}}
}

// Seen implements NonceStore. When full, the expired go, then all.
func (c *MemoryNonces) Seen(_ context.Context, key string, expiry time.Time) (bool, error) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.m[key]; ok && now.Before(t) {
		return true, nil
	}
	if len(c.m) >= c.max {
		for k, t := range c.m {
			if !now.Before(t) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m) // under a flood: refuse none rather than grow
		}
	}
	c.m[key] = expiry
	return false, nil
}
