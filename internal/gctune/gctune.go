// Package gctune sizes the garbage collector's headroom to the live heap.
//
// Go's collector lets the heap grow by GOGC percent of the live heap before
// it collects again. A server with a small live heap collects often for
// little memory (each collection costs CPU per request), so a large GOGC
// pays there; a server holding ten thousand idle connections has a large
// live heap, and a large GOGC then multiplies the memory they cost. Tuner
// sets GOGC after each collection so that the headroom is Floor bytes, as a
// percentage of the live heap, within [Min, Max]: 400 % of a 10 MiB heap,
// 100 % of a 200 MiB one.
package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// Percent returns the GOGC that gives a live heap of live bytes a headroom
// of floor bytes, within [min, max].
func Percent(live, floor uint64, min, max int) int {
	if live == 0 {
		return max
	}
	p := floor * 100 / live
	switch {
	case p > uint64(max):
		return max
	case p < uint64(min):
		return min
	}
	return int(p)
}

// A Tuner adjusts GOGC after every collection until stopped.
type Tuner struct {
	Floor    uint64 // headroom wanted, in bytes
	Min, Max int    // bounds of GOGC

	stopped atomic.Bool
	mu      sync.Mutex
	current int
	sample  []metrics.Sample
}

// Start applies the tuning to the live heap now and after every collection.
func (t *Tuner) Start() {
	// GOGC applies to the live heap, the goroutine stacks and the
	// globals together.
	t.sample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}
	t.adjust()
	t.arm()
}

// Stop ends the tuning for good; GOGC keeps its last value.
func (t *Tuner) Stop() { t.stopped.Store(true) }

// Current returns the GOGC the tuner last set.
func (t *Tuner) Current() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.current
}

// sentinel is garbage from birth: its finalizer runs after the next
// collection, adjusts GOGC and makes the next sentinel. (Big enough, and
// holding a pointer, to stay out of the tiny allocator, whose objects'
// finalizers may never run.)
type sentinel struct {
	t *Tuner
	_ [32]byte
}

func (t *Tuner) arm() {
	runtime.SetFinalizer(&sentinel{t: t}, func(s *sentinel) {
		if s.t.stopped.Load() {
			return
		}
		s.t.adjust()
		s.t.arm()
	})
}

func (t *Tuner) adjust() {
	t.mu.Lock()
	defer t.mu.Unlock()
	metrics.Read(t.sample)
	var live uint64
	for _, s := range t.sample {
		if s.Value.Kind() == metrics.KindUint64 {
			live += s.Value.Uint64()
		}
	}
	if p := Percent(live, t.Floor, t.Min, t.Max); p != t.current {
		debug.SetGCPercent(p)
		t.current = p
	}
}
