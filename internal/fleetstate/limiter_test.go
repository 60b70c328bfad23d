package fleetstate

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/internal/testutil"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

type taker interface {
	Take(key string, rate float64, burst int, now time.Time) (bool, time.Duration)
}

// TestBucket: the Redis bucket and the local one give the same answers on
// one clock: 2 tokens a second, a burst of 3.
func TestBucket(t *testing.T) {
	srv := testutil.StartRedis(t)
	t0 := time.Now()
	steps := []struct {
		at   time.Duration
		ok   bool
		wait time.Duration
	}{
		{0, true, 0},
		{0, true, 0},
		{0, true, 0},
		{0, false, 500 * time.Millisecond},
		{250 * time.Millisecond, false, 250 * time.Millisecond},
		{500 * time.Millisecond, true, 0},
		{500 * time.Millisecond, false, 500 * time.Millisecond},
		// A clock behind the last take (another instance's) adds nothing.
		{400 * time.Millisecond, false, 500 * time.Millisecond},
		{10 * time.Second, true, 0}, // full again: 3, less this one
		{10 * time.Second, true, 0},
		{10 * time.Second, true, 0},
		{10 * time.Second, false, 500 * time.Millisecond},
	}
	for _, l := range []struct {
		name string
		l    taker
	}{{"redis", open(t, srv.URL).r.Limiter(0)}, {"local", policy.NewLocal(0)}} {
		for i, s := range steps {
			ok, wait := l.l.Take("bot", 2, 3, t0.Add(s.at))
			if ok != s.ok || wait != s.wait {
				t.Errorf("%s: take %d at +%v: %v, %v; want %v, %v", l.name, i, s.at, ok, wait, s.ok, s.wait)
			}
		}
		if ok, _ := l.l.Take("other", 2, 3, t0); !ok {
			t.Errorf("%s: another key shares the bucket", l.name)
		}
		if ok, wait := l.l.Take("bot", 0, 3, t0); ok || wait != 0 {
			t.Errorf("%s: rate 0 admitted (%v, %v)", l.name, ok, wait)
		}
	}
}

// admit runs limiters at once, each taking from key "bot" (10 a second,
// burst 1) as fast as it is admitted, for d; it returns each one's count.
func admit(limiters []taker, d time.Duration) []int {
	counts := make([]int, len(limiters))
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i, l := range limiters {
		wg.Go(func() {
			for time.Now().Before(end) {
				if ok, wait := l.Take("bot", 10, 1, time.Now()); ok {
					counts[i]++
				} else {
					time.Sleep(min(wait, 2*time.Millisecond))
				}
			}
		})
	}
	wg.Wait()
	return counts
}

// TestLimiterFleet: three instances sharing one redis-server admit one
// identity's 10 a second between them, within 15 % over 5 s (51 with the
// burst of 1); three local limiters would admit it three times over.
func TestLimiterFleet(t *testing.T) {
	srv := testutil.StartRedis(t)
	var fleet []taker
	for range 3 {
		fleet = append(fleet, open(t, srv.URL).r.Limiter(0))
	}
	counts := admit(fleet, 5*time.Second)
	total := counts[0] + counts[1] + counts[2]
	t.Logf("shared in redis: admitted %v, %d in all over 5 s (10/s: 50, and the burst)", counts, total)
	if total < 43 || total > 57 {
		t.Errorf("three instances admitted %d in 5 s at 10/s, want 50 within 15%% (43 to 57)", total)
	}
	for i, c := range counts {
		if c == 0 {
			t.Errorf("instance %d admitted nothing: %v", i, counts)
		}
	}

	// The same with each instance's own buckets, for comparison: the
	// harness tells a shared bucket from three.
	local := admit([]taker{policy.NewLocal(0), policy.NewLocal(0), policy.NewLocal(0)}, time.Second)
	t.Logf("without redis: admitted %v in 1 s", local)
	if sum := local[0] + local[1] + local[2]; sum < 25 {
		t.Errorf("three local limiters admitted %d in 1 s at 10/s each, want about 30", sum)
	}
}

// TestLimiterOutage: Redis stopped, Take answers from local buckets; when
// it is back, the shared bucket again.
func TestLimiterOutage(t *testing.T) {
	srv := testutil.StartRedis(t)
	a, b := open(t, srv.URL), open(t, srv.URL)
	la, lb := a.r.Limiter(0), b.r.Limiter(0)
	now := time.Now()
	if ok, _ := la.Take("bot", 1, 1, now); !ok {
		t.Fatal("first take refused")
	}
	if ok, _ := lb.Take("bot", 1, 1, now); ok {
		t.Fatal("b took a token a took from the shared bucket")
	}
	srv.Stop()
	// Down: each instance its own bucket, full.
	if ok, _ := la.Take("bot", 1, 1, now); !ok {
		t.Error("during the outage, a's local bucket refused its first take")
	}
	if ok, _ := la.Take("bot", 1, 1, now); ok {
		t.Error("during the outage, a's local bucket admitted past its burst")
	}
	waitUp(t, b, false)
	if ok, _ := lb.Take("bot", 1, 1, now); !ok {
		t.Error("during the outage, b's local bucket refused its first take")
	}
	srv.Start()
	waitUp(t, a, true)
	waitUp(t, b, true)
	later := now.Add(time.Minute)
	if ok, _ := la.Take("bot", 1, 1, later); !ok {
		t.Error("after the outage, the first take refused")
	}
	if ok, _ := lb.Take("bot", 1, 1, later); ok {
		t.Error("after the outage, b took a token a took from the shared bucket")
	}
}

// seenAhead is Seen for a request whose signature, if its nonce is new,
// verifies as agent's and whose rules then take the tokens of plan: it
// returns the replay verdict and the tokens taken in advance.
func seenAhead(t *testing.T, in *instance, key, agent string, plan []policy.Take) (bool, []policy.Taken) {
	t.Helper()
	adv := &policy.Advance{Plan: func(a string) []policy.Take {
		if a != agent {
			t.Errorf("Plan(%q), want the presumed agent %q", a, agent)
		}
		return plan
	}}
	ctx := webbotauth.WithPresumed(policy.WithAdvance(context.Background(), adv), webbotauth.Result{Status: "valid", Agent: agent})
	replayed, err := in.nonces.Seen(ctx, key, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatalf("Seen(%q): %v", key, err)
	}
	return replayed, adv.Taken
}

// TestNoncesTakeAhead: a signed request's nonce check takes its rules'
// limit tokens in the same call to Redis (one script: no call of the
// limiter's), from the buckets the limiter uses, and only for a nonce new
// to the fleet.
func TestNoncesTakeAhead(t *testing.T) {
	srv := testutil.StartRedis(t)
	a, b := open(t, srv.URL), open(t, srv.URL)
	plan := []policy.Take{{Key: "shadow agent x", Rate: 0.001, Burst: 1000}, {Key: "slow agent x", Rate: 0.5, Burst: 2}}
	var oks []bool
	for i, in := range []*instance{a, b, a} {
		replayed, taken := seenAhead(t, in, fmt.Sprint("k n", i), "https://x.example", plan)
		if replayed || len(taken) != 2 || taken[0].Take != plan[0] || taken[1].Take != plan[1] || !taken[0].OK {
			t.Fatalf("nonce %d: replayed %v, taken %+v; want new, both buckets taken", i, replayed, taken)
		}
		oks = append(oks, taken[1].OK)
		if i == 2 && (taken[1].Wait < time.Second || taken[1].Wait > 2*time.Second) {
			t.Errorf("the third take of a bucket of 2 at 0.5/s: wait %v, want about 2 s", taken[1].Wait)
		}
	}
	if !oks[0] || !oks[1] || oks[2] {
		t.Errorf("takes of a bucket of 2 by a, b, a: %v; want true true false (one bucket for the fleet)", oks)
	}
	// The limiter's Take reads the same bucket: empty.
	if ok, _ := b.r.Limiter(0).Take("slow agent x", 0.5, 2, time.Now()); ok {
		t.Error("the limiter took a token from the bucket the nonce checks emptied")
	}
	// A replay, at either instance, takes nothing.
	for _, in := range []*instance{a, b} {
		if replayed, taken := seenAhead(t, in, "k n0", "https://x.example", plan); !replayed || len(taken) != 0 {
			t.Errorf("a replay: replayed %v, taken %+v; want a replay and no token taken", replayed, taken)
		}
	}
	// Rules whose buckets are another limiter's (this process's own)
	// are not taken from in Redis: the nonce alone.
	local, _ := policy.Compile([]policy.Rule{{Name: "local", Action: "limit", Rate: "1/s", Burst: 1}}, policy.NewLocal(0))
	adv := local.NewAdvance(func(agent string) policy.Identity { return policy.Identity{Signature: "valid", Agent: agent} })
	ctx := webbotauth.WithPresumed(policy.WithAdvance(context.Background(), adv), webbotauth.Result{Status: "valid", Agent: "https://x.example"})
	if replayed, err := a.nonces.Seen(ctx, "k local", time.Now().Add(time.Minute)); replayed || err != nil || len(adv.Taken) != 0 {
		t.Errorf("rules of another limiter: replayed %v (%v), taken %+v; want a new nonce and nothing taken in Redis", replayed, err, adv.Taken)
	}
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer raw.Close()
	if n, _ := raw.Exists(context.Background(), a.r.key("limit:", "local agent https://x.example")).Result(); n != 0 {
		t.Error("a bucket of another limiter's rules was made in Redis")
	}
	if tok, err := raw.HGet(context.Background(), a.r.key("limit:", "shadow agent x"), "t").Float64(); err != nil || tok < 996.9 || tok > 997.1 {
		t.Errorf("the shadow bucket holds %v tokens (%v), want 997 (1000, 3 taken, none by the replays)", tok, err)
	}
	// One call to Redis for each check, none of the limiter's but the
	// one above.
	a.obs.mu.Lock()
	defer a.obs.mu.Unlock()
	if a.obs.calls["nonce"] != 4 || a.obs.calls["limit"] != 0 || len(a.obs.errs) != 0 {
		t.Errorf("a's calls %v, errors %v; want 4 nonce calls and no limit call", a.obs.calls, a.obs.errs)
	}
}
