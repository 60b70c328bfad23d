package policy

import (
	"hash/maphash"
	"sync"
	"time"
)

// A Limiter holds the token buckets of limit rules. Implementations are
// safe for concurrent use; which one serves (this process's, or one shared
// by a fleet) shows only in metrics.
type Limiter interface {
	// Take takes a token from the bucket named key, which holds at most
	// burst tokens and gains rate of them a second, and reports whether
	// there was one; if not, wait is how long until there will be.
	Take(key string, rate float64, burst int, now time.Time) (ok bool, wait time.Duration)
}

// Local is a Limiter of this process alone.
type Local struct {
	seed   maphash.Seed
	shards [16]localShard
	max    int // buckets per shard
}

type localShard struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLocal returns a Limiter that keeps at most maxBuckets buckets (default
// 1<<20 for 0): past it, buckets that have filled up again (which are as
// good as new) are dropped first, then any.
func NewLocal(maxBuckets int) *Local {
	if maxBuckets <= 0 {
		maxBuckets = 1 << 20
	}
	l := &Local{seed: maphash.MakeSeed(), max: max(1, maxBuckets/16)}
	for i := range l.shards {
		l.shards[i].buckets = map[string]*bucket{}
	}
	return l
}

// Take implements Limiter.
func (l *Local) Take(key string, rate float64, burst int, now time.Time) (bool, time.Duration) {
	s := &l.shards[maphash.String(l.seed, key)%uint64(len(l.shards))]
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[key]
	if b == nil {
		if len(s.buckets) >= l.max {
			s.evict(now, rate, burst)
		}
		b = &bucket{tokens: float64(burst), last: now}
		s.buckets[key] = b
	}
	if now.After(b.last) {
		b.tokens = min(float64(burst), b.tokens+now.Sub(b.last).Seconds()*rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// evict drops the buckets that are full again by now (at this rate and
// burst, a good guess for most), or one at random when none is.
func (s *localShard) evict(now time.Time, rate float64, burst int) {
	full := time.Duration(float64(burst) / rate * float64(time.Second))
	dropped := false
	for k, b := range s.buckets {
		if now.Sub(b.last) >= full {
			delete(s.buckets, k)
			dropped = true
		}
	}
	if !dropped {
		for k := range s.buckets {
			delete(s.buckets, k)
			break
		}
	}
}
