package webbotauth

import (
	"container/heap"
	"context"
	"errors"
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

// errNoncesFull is what a MemoryNonces answers for a nonce it may have
// had to forget.
var errNoncesFull = errors.New("too many nonces in force")

// MemoryNonces is a NonceStore in this process, of at most a bound of
// nonces. Each nonce goes at its own expiry. When the store is full of
// nonces still in force, the one that expires first (possibly the one
// being added) is forgotten to make room; and until that expiry has
// passed, a nonce the store does not hold that expires no later is
// refused (Seen's error): it may be the one forgotten, replayed. So a
// replay is never taken for a first use; under a flood of nonces in force,
// the signatures refused are those that would expire first, while a
// signer that makes each signature as it sends it, its expiry later than
// any before, is not refused. Its memory is one map entry and one heap
// entry a nonce.
type MemoryNonces struct {
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[string]time.Time // key -> expiry, every nonce held
	// byExpiry holds the entries of m, the first to expire first.
	byExpiry nonceHeap
	// forgotten is the latest expiry of a nonce forgotten before it:
	// until then, a nonce not held that expires no later may be it.
	forgotten time.Time
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

// Seen implements NonceStore.
func (c *MemoryNonces) Seen(_ context.Context, key string, expiry time.Time) (bool, error) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.m[key]; ok && now.Before(t) {
		return true, nil
	}
	// The expired go, each at the first use after its expiry. A key held
	// but expired goes here too, so m and byExpiry stay one to one.
	for len(c.byExpiry) > 0 && !now.Before(c.byExpiry[0].expiry) {
		delete(c.m, heap.Pop(&c.byExpiry).(nonceEntry).key)
	}
	if now.Before(c.forgotten) && !expiry.After(c.forgotten) {
		return false, errNoncesFull
	}
	c.m[key] = expiry
	heap.Push(&c.byExpiry, nonceEntry{key, expiry})
	for len(c.m) > c.max {
		e := heap.Pop(&c.byExpiry).(nonceEntry)
		delete(c.m, e.key)
		if e.expiry.After(c.forgotten) {
			c.forgotten = e.expiry
		}
	}
	return false, nil
}

type nonceEntry struct {
	key    string
	expiry time.Time
}

// nonceHeap orders entries by expiry, the first to expire first
// (container/heap).
type nonceHeap []nonceEntry

func (h nonceHeap) Len() int           { return len(h) }
func (h nonceHeap) Less(i, j int) bool { return h[i].expiry.Before(h[j].expiry) }
func (h nonceHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nonceHeap) Push(x any)        { *h = append(*h, x.(nonceEntry)) }
func (h *nonceHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
