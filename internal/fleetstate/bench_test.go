package fleetstate

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testutil"
	"github.com/req-mtls/req-mtls/internal/webbotauth"

	"github.com/req-mtls/req-mtls/internal/policy"
)

// BenchmarkNonces is the cost of one nonce check (a first use: a replay
// costs the same): this process's store alone, and with Redis on loopback
// (one round trip more: the nonce script), one at a time and from parallel
// requests.
// cpu-ns/op is this process's CPU time (user and system) per check, what
// a gateway spends; ns/op, the time a request waits, includes
// redis-server's part, on the same cores.
func BenchmarkNonces(b *testing.B) {
	srv := testutil.StartRedis(b)
	r, err := Open(Config{URL: srv.URL, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var n atomic.Int64
	for _, s := range []struct {
		name  string
		store func() webbotauth.NonceStore
	}{
		{"local", func() webbotauth.NonceStore { return webbotauth.NewMemoryNonces(0, nil) }},
		{"redis", func() webbotauth.NonceStore { return r.Nonces(webbotauth.NewMemoryNonces(0, nil)) }},
	} {
		check := func(b *testing.B, store webbotauth.NonceStore) {
			key := "key " + strconv.FormatInt(n.Add(1), 10)
			if seen, err := store.Seen(context.Background(), key, time.Now().Add(2*time.Minute)); seen || err != nil {
				b.Fatalf("Seen: %v, %v", seen, err)
			}
		}
		b.Run(s.name, func(b *testing.B) {
			store := s.store()
			cpu := processCPU()
			for b.Loop() {
				check(b, store)
			}
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
		b.Run(s.name+"-parallel", func(b *testing.B) {
			store := s.store()
			cpu := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					check(b, store)
				}
			})
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
	if !r.Up() {
		b.Fatal("redis went down during the benchmark: the figures are the local store's")
	}
}

// BenchmarkLimiter is the cost of one Take: local buckets, and the bucket
// in Redis (one EVALSHA round trip).
func BenchmarkLimiter(b *testing.B) {
	srv := testutil.StartRedis(b)
	r, err := Open(Config{URL: srv.URL, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for _, l := range []struct {
		name string
		l    taker
	}{{"local", policy.NewLocal(0)}, {"redis", r.Limiter(0)}} {
		b.Run(l.name, func(b *testing.B) {
			cpu := processCPU()
			for b.Loop() {
				l.l.Take("bot", 1e9, 1e9, time.Now())
			}
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
	if !r.Up() {
		b.Fatal("redis went down during the benchmark: the figures are the local buckets'")
	}
}
