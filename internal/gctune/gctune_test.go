package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 400},
		{1 * mib, 400},
		{16 * mib, 400},
		{32 * mib, 200},
		{64 * mib, 100},
		{640 * mib, 100},
	} {
		if got := Percent(c.live, 64*mib, 100, 400); got != c.want {
			t.Errorf("Percent(%d MiB) = %d, want %d", c.live/mib, got, c.want)
		}
	}
}

func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestTunerFollowsLiveHeap: a live heap past the floor brings GOGC down
// after a collection; once it is garbage, GOGC goes back up.
func TestTunerFollowsLiveHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	tu := &Tuner{Floor: 8 << 20, Min: 100, Max: 400}
	tu.Start()
	defer tu.Stop()
	if got := gogc(); got != 400 {
		t.Fatalf("small heap: GOGC %d, want 400", got)
	}
	held := make([][]byte, 64)
	for i := range held {
		held[i] = make([]byte, 1<<20) // 64 MiB live
	}
	waitGOGC(t, 100)
	runtime.KeepAlive(held)
	held = nil
	waitGOGC(t, 400)
}

func waitGOGC(t *testing.T, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the finalizer runs after
		if gogc() == want {
			return
		}
	}
	t.Fatalf("GOGC %d, want %d", gogc(), want)
}
