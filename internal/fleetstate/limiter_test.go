package fleetstate

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testutil"
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
	}{{"redis", open(t, srv.URL).r.Limiter(0)}, {"local", NewLocalLimiter(0)}} {
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
	local := admit([]taker{NewLocalLimiter(0), NewLocalLimiter(0), NewLocalLimiter(0)}, time.Second)
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

// TestLocalLimiterBound: past its bound, the local limiter drops buckets
// that are full again, then any.
func TestLocalLimiterBound(t *testing.T) {
	l := NewLocalLimiter(4)
	t0 := time.Now()
	for i := range 4 {
		l.Take(fmt.Sprint("k", i), 1, 1, t0)
	}
	l.Take("k4", 1, 1, t0.Add(2*time.Second)) // the four are full again
	if len(l.buckets) != 1 {
		t.Errorf("%d buckets, want the new one alone", len(l.buckets))
	}
	for i := range 3 {
		l.Take(fmt.Sprint("j", i), 1, 1, t0.Add(2*time.Second))
	}
	l.Take("j3", 1, 1, t0.Add(2*time.Second)) // none full: one goes
	if len(l.buckets) != 4 {
		t.Errorf("%d buckets, want 4", len(l.buckets))
	}
}
