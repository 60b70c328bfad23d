package fleetstate

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// takeScript is a token bucket in one Redis hash, taken from in one round
// trip (EVALSHA): t holds the tokens, l the time of the last take in
// microseconds. The bucket fills at rate tokens a second up to burst; a
// bucket left alone until it is full again is as good as none, so it
// expires then. It returns {1, 0} when a token was taken, or {0, the
// microseconds until there is one}.
var takeScript = redis.NewScript(`
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens, last = tonumber(b[1]), tonumber(b[2])
if tokens == nil or last == nil then
	tokens, last = burst, now
end
if now > last then
	tokens = math.min(burst, tokens + (now - last) / 1e6 * rate)
	last = now
end
local ok, wait = 0, 0
if tokens >= 1 then
	tokens = tokens - 1
	ok = 1
else
	wait = math.ceil((1 - tokens) / rate * 1e6)
end
-- %.17g: tostring keeps 14 digits, too few for microseconds since 1970.
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'l', string.format('%.17g', last))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {ok, wait}
`)

// Limiter holds token buckets in Redis, shared by the fleet: every
// instance takes from the same bucket for a key, so together they admit
// its rate. While Redis is down, or when a call fails or passes the
// timeout, buckets of this process answer: each instance then admits the
// rate on its own. Its Take has the method set of the rules' limiter.
type Limiter struct {
	r     *Redis
	local *LocalLimiter
}

// Limiter returns the fleet's limiter, with local buckets (at most
// maxLocal, see NewLocalLimiter) as its fallback.
func (r *Redis) Limiter(maxLocal int) *Limiter {
	return &Limiter{r: r, local: NewLocalLimiter(maxLocal)}
}

// Take takes a token from the bucket named key, which holds at most burst
// tokens and gains rate of them a second, and reports whether there was
// one; if not, wait is how long until there will be. The time is the
// caller's now, in every instance: their clocks agree to well under a
// token's time at the rates a limit sets (NTP keeps them within
// milliseconds). A rate not above 0 or a burst below 1 admits nothing.
func (l *Limiter) Take(key string, rate float64, burst int, now time.Time) (bool, time.Duration) {
	if rate <= 0 || burst < 1 {
		return false, 0
	}
	if !l.r.Up() {
		l.r.local()
		return l.local.Take(key, rate, burst, now)
	}
	var res []int64
	if l.r.call(context.Background(), "limit", func(ctx context.Context) error {
		var err error
		res, err = takeScript.Run(ctx, l.r.client, []string{l.r.key("limit:", key)}, rate, burst, now.UnixMicro()).Int64Slice()
		return err
	}) != nil || len(res) != 2 {
		l.r.local()
		return l.local.Take(key, rate, burst, now)
	}
	return res[0] == 1, time.Duration(res[1]) * time.Microsecond
}

// LocalLimiter holds token buckets in this process.
type LocalLimiter struct {
	max int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLocalLimiter returns buckets of this process, at most max of them
// (default 1<<20 for 0): past it, the buckets that have filled up again,
// as good as new, are dropped, or one at random when none has.
func NewLocalLimiter(max int) *LocalLimiter {
	if max <= 0 {
		max = 1 << 20
	}
	return &LocalLimiter{max: max, buckets: map[string]*bucket{}}
}

// Take is Limiter.Take for this process alone.
func (l *LocalLimiter) Take(key string, rate float64, burst int, now time.Time) (bool, time.Duration) {
	if rate <= 0 || burst < 1 {
		return false, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.evict(now, rate, burst)
		}
		b = &bucket{tokens: float64(burst), last: now}
		l.buckets[key] = b
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

// evict drops the buckets full again by now at this rate and burst, or
// one at random when none is.
func (l *LocalLimiter) evict(now time.Time, rate float64, burst int) {
	full := time.Duration(float64(burst) / rate * float64(time.Second))
	n := len(l.buckets)
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) == n {
		for k := range l.buckets {
			delete(l.buckets, k)
			break
		}
	}
}
