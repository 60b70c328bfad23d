package fleetstate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/req-mtls/req-mtls/internal/testutil"
)

// TestPipelineBatches: calls made together go to Redis in fewer round
// trips than calls, each answered as if alone (a bucket of 100 admits 100
// of 400 takes, whichever batch they came in), and one call alone is made
// at once, in a round trip of its own.
func TestPipelineBatches(t *testing.T) {
	srv := testutil.StartRedis(t)
	in := open(t, srv.URL)
	l := in.r.Limiter(0)
	now := time.Now()
	if ok, _ := l.Take("alone", 1, 1, now); !ok {
		t.Fatal("a first take refused")
	}
	if trips, calls := in.r.pipe.sends.Load(), in.r.pipe.calls.Load(); trips != 1 || calls != 1 {
		t.Fatalf("one call alone: %d round trips for %d calls, want 1 and 1", trips, calls)
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 400 {
		wg.Go(func() {
			if ok, _ := l.Take("many", 1, 100, now); ok {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	trips, calls := in.r.pipe.sends.Load()-1, in.r.pipe.calls.Load()-1
	if admitted.Load() != 100 || calls != 400 || trips >= calls {
		t.Errorf("400 takes at once from a bucket of 100: %d admitted in %d calls and %d round trips; want 100, 400 and fewer trips than calls", admitted.Load(), calls, trips)
	}
	in.obs.mu.Lock()
	defer in.obs.mu.Unlock()
	if len(in.obs.errs) != 0 || !in.r.Up() {
		t.Errorf("errors %v", in.obs.errs)
	}
	t.Logf("400 takes at once: %d round trips", trips)
}

// TestPipelineScriptsFlushed: Redis without the scripts (restarted, SCRIPT
// FLUSH) loads them again at the next call, alone or in a batch; none
// fails.
func TestPipelineScriptsFlushed(t *testing.T) {
	srv := testutil.StartRedis(t)
	in := open(t, srv.URL)
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer raw.Close()
	for round := range 3 {
		if err := raw.ScriptFlush(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				if replayed, err := in.nonces.Seen(context.Background(), fmt.Sprint("k flushed ", round, " ", i), time.Now().Add(time.Minute)); replayed || err != nil {
					t.Errorf("a new nonce after SCRIPT FLUSH: replayed %v, %v", replayed, err)
				}
			})
		}
		wg.Wait()
	}
	in.obs.mu.Lock()
	defer in.obs.mu.Unlock()
	if len(in.obs.errs) != 0 || !in.r.Up() {
		t.Errorf("calls failed after SCRIPT FLUSH: %v\n%s", in.obs.errs, in.log)
	}
}

// TestPipelineQueueFull: when Redis does not answer, calls that find the
// queue full are answered at once with an error (their requests then
// answered locally), not held to the timeout.
func TestPipelineQueueFull(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns sync.WaitGroup
	defer conns.Wait()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// Reads, never answers.
			conns.Go(func() {
				defer c.Close()
				c.Read(make([]byte, 1<<20))
				for {
					if _, err := c.Read(make([]byte, 4096)); err != nil {
						return
					}
				}
			})
		}
	}()
	client := redis.NewClient(&redis.Options{Addr: l.Addr().String(), MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true, Protocol: 2})
	p := newPipeline(client, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		// The callers leave, the batch out fails with its connection,
		// and the pipeline stops.
		cancel()
		wg.Wait()
		client.Close()
		p.close()
		l.Close()
	}()
	call := func() error {
		_, err := p.do(ctx, takeScript, []string{"k"}, 1, 1, 0)
		return err
	}
	// As many calls out as go at once, so that the others wait for
	// batches: a batch out (never answered), and the queue filled behind
	// it.
	p.inflight.Add(maxDirect)
	defer p.inflight.Add(-maxDirect)
	for range maxBatch + queueLen {
		wg.Go(func() { call() })
	}
	for deadline := time.Now().Add(time.Minute); len(p.queue) < queueLen; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the queue holds %d, want %d", len(p.queue), queueLen)
		}
	}
	// Without the bound, this call would wait its 10 s out.
	late, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	if _, err := p.do(late, takeScript, []string{"k"}, 1, 1, 0); !errors.Is(err, errQueueFull) {
		t.Errorf("a call past a full queue: %v, want errQueueFull at once", err)
	}
}

// TestQueueFullIsNoOutage: a call answered locally because the queue was
// full leaves Redis in use (no outage line, reqmtls_redis_up stays 1):
// the burst is this instance's, not Redis's failure.
func TestQueueFullIsNoOutage(t *testing.T) {
	srv := testutil.StartRedis(t)
	in := open(t, srv.URL)
	if err := in.r.call(context.Background(), "nonce", func(context.Context) error { return errQueueFull }); !errors.Is(err, errQueueFull) {
		t.Fatalf("call: %v", err)
	}
	if !in.r.Up() || strings.Contains(in.log.String(), "unreachable") {
		t.Errorf("a full queue marked Redis down:\n%s", in.log)
	}
}

// TestCloseTwice: Close may be called again (a server shut down twice).
func TestCloseTwice(t *testing.T) {
	srv := testutil.StartRedis(t)
	r, err := Open(Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	r.Close()
}
