package fleetstate

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/req-mtls/req-mtls/internal/policy"
)

// bucketLua takes a token from the bucket in the Redis hash key: t holds
// the tokens, l the time of the last take in microseconds. The bucket
// fills at rate tokens a second up to burst; a bucket left alone until it
// is full again is as good as none, so it expires then. It returns 1, 0
// when a token was taken, or 0 and the microseconds until there is one.
const bucketLua = `
local function take(key, rate, burst, now)
	local b = redis.call('HMGET', key, 't', 'l')
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
	redis.call('HSET', key, 't', string.format('%.17g', tokens), 'l', string.format('%.17g', last))
	redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
	return ok, wait
end
`

// takeScript takes one token (bucketLua) in one round trip (EVALSHA):
// KEYS[1] the bucket, ARGV rate, burst and now (µs). It returns {1, 0}
// when a token was taken, or {0, the microseconds until there is one}.
var takeScript = redis.NewScript(bucketLua + `
local ok, wait = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {ok, wait}
`)

// Limiter holds token buckets in Redis, shared by the fleet: every
// instance takes from the same bucket for a key, so together they admit
// its rate. While Redis is down, or when a call fails or passes the
// timeout, buckets of this process answer: each instance then admits the
// rate on its own. Its Take has the method set of the rules' limiter.
type Limiter struct {
	r     *Redis
	local *policy.Local
}

// Limiter returns the fleet's limiter, with buckets of this process (at
// most maxLocal, see policy.NewLocal) as its fallback.
func (r *Redis) Limiter(maxLocal int) *Limiter {
	return &Limiter{r: r, local: policy.NewLocal(maxLocal)}
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
		res, err = l.r.pipe.do(ctx, takeScript, []string{l.r.key("limit:", key)}, rate, burst, now.UnixMicro())
		return err
	}) != nil || len(res) != 2 {
		l.r.local()
		return l.local.Take(key, rate, burst, now)
	}
	return res[0] == 1, time.Duration(res[1]) * time.Microsecond
}
