package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testutil"
)

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5 s for %s", what)
		}
	}
}

// TestWriter: lines wait in the buffer, reach the writer on the timer (set
// again by the next line after a flush), nothing is lost at Close, and a
// line after Close goes out without waiting for a timer.
func TestWriter(t *testing.T) {
	var out testutil.Buffer
	w := New(&out, 50*time.Millisecond)
	w.Write([]byte("one\n"))
	if out.String() != "" {
		t.Fatal("written at once, not buffered")
	}
	waitFor(t, "the first flush", func() bool { return out.String() == "one\n" })
	w.Write([]byte("two\n"))
	waitFor(t, "the second flush", func() bool { return out.String() == "one\ntwo\n" })
	w.Write([]byte("three\n"))
	w.Close()
	if out.String() != "one\ntwo\nthree\n" {
		t.Fatalf("after Close: %q", out.String())
	}
	w.Write([]byte("four\n"))
	waitFor(t, "a write after Close", func() bool { return out.String() == "one\ntwo\nthree\nfour\n" })
}

// chunks records each write it gets.
type chunks struct {
	mu      sync.Mutex
	got     [][]byte
	err     error // what every write returns, nil for none
	partial int   // with err: the bytes a write takes first
}

func (c *chunks) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		n := min(c.partial, len(p))
		if n > 0 {
			c.got = append(c.got, bytes.Clone(p[:n]))
		}
		return n, c.err
	}
	c.got = append(c.got, bytes.Clone(p))
	return len(p), nil
}

// set makes the writes fail with err (nil: work), after taking partial
// bytes.
func (c *chunks) set(err error, partial int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err, c.partial = err, partial
}

func (c *chunks) all() (n int, joined string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got), string(bytes.Join(c.got, nil))
}

// TestFullBuffer: a line that does not fit sends what the buffer holds
// first, before the timer, and never half a line; a line larger than the
// buffer goes out whole, after what came before it.
func TestFullBuffer(t *testing.T) {
	out := &chunks{}
	w := New(out, time.Hour)
	line := strings.Repeat("x", 999) + "\n"
	var want strings.Builder
	for range Size/len(line) + 1 {
		w.Write([]byte(line))
		want.WriteString(line)
	}
	waitFor(t, "the full buffer's write", func() bool { n, _ := out.all(); return n == 1 })
	if _, got := out.all(); got != strings.Repeat(line, Size/len(line)) {
		t.Fatalf("after %d lines of %d bytes (buffer %d): a write of %d bytes", Size/len(line)+1, len(line), Size, len(got))
	}
	w.Flush()
	big := strings.Repeat("y", Size+1)
	w.Write([]byte(big))
	want.WriteString(big)
	w.Flush()
	n, got := out.all()
	if n != 3 || got != want.String() {
		t.Fatalf("after a line larger than the buffer: %d writes, in order %v", n, got == want.String())
	}
	for i, c := range out.got {
		if c[len(c)-1] != '\n' && i != 2 {
			t.Errorf("write %d ends inside a line", i)
		}
	}
}

// TestConcurrentLines: lines from many goroutines arrive, each whole; the
// lines that do not (both buffers full, one being written) are counted.
func TestConcurrentLines(t *testing.T) {
	out := &chunks{}
	w := New(out, 5*time.Millisecond)
	var wg sync.WaitGroup
	const writers, lines = 8, 2000
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(w, "writer=%d line=%d %s\n", g, i, strings.Repeat("z", i%300))
			}
		})
	}
	wg.Wait()
	w.Close()
	_, got := out.all()
	seen := map[string]bool{}
	for l := range strings.Lines(got) {
		var g, i int
		f := strings.Fields(l)
		if len(f) < 2 || !strings.HasSuffix(l, "\n") {
			t.Fatalf("a line cut: %q", l)
		}
		if _, err := fmt.Sscanf(f[0]+" "+f[1], "writer=%d line=%d", &g, &i); err != nil {
			t.Fatalf("a line mixed with another: %q", l)
		}
		if pad := strings.TrimSuffix(strings.TrimPrefix(l, f[0]+" "+f[1]+" "), "\n"); pad != strings.Repeat("z", i%300) {
			t.Fatalf("a line cut or mixed: %q", l)
		}
		seen[fmt.Sprint(g, i)] = true
	}
	failed, behind := w.Dropped()
	if failed != 0 || uint64(len(seen))+behind != writers*lines {
		t.Fatalf("%d lines arrived and %d+%d dropped, of %d", len(seen), failed, behind, writers*lines)
	}
}

// TestOnError: OnError hears when writes start to fail, with the bytes
// that write dropped, and when they work again, with all the bytes dropped
// meanwhile.
func TestOnError(t *testing.T) {
	out := &chunks{}
	out.set(errors.New("no space left on device"), 0)
	var reports []string
	w := New(out, time.Hour)
	w.OnError = func(err error, dropped int) { reports = append(reports, fmt.Sprint(err, " ", dropped)) }
	w.Write([]byte("lost one\n"))
	if err := w.Flush(); err == nil {
		t.Fatal("Flush: no error from a failed write")
	}
	w.Write([]byte("lost two\n"))
	w.Flush()
	out.set(nil, 0)
	w.Write([]byte("kept\n"))
	w.Flush()
	out.set(errors.New("input/output error"), 0)
	w.Write([]byte("lost three\n"))
	w.Close()
	want := []string{"no space left on device 9", "<nil> 18", "input/output error 11"}
	if fmt.Sprint(reports) != fmt.Sprint(want) {
		t.Fatalf("reports %q, want %q", reports, want)
	}
	if _, got := out.all(); got != "kept\n" {
		t.Fatalf("written %q", got)
	}
}

// TestPartialWrite: after a write that failed inside a line, the next
// lines start on a line of their own.
func TestPartialWrite(t *testing.T) {
	out := &chunks{}
	w := New(out, time.Hour)
	out.set(errors.New("no space left on device"), 5)
	w.Write([]byte("lost one\n"))
	w.Flush()
	out.set(nil, 0)
	w.Write([]byte("kept\n"))
	w.Close()
	if _, got := out.all(); got != "lost \nkept\n" {
		t.Fatalf("written %q", got)
	}
}

// TestOnErrorWritesBack: OnError may write to the Writer, even when that
// makes a report of its own: no deadlock, and every report made, in order.
func TestOnErrorWritesBack(t *testing.T) {
	out := &chunks{}
	out.set(errors.New("no space left on device"), 0)
	w := New(out, time.Hour)
	var reports []string
	w.OnError = func(err error, dropped int) {
		reports = append(reports, fmt.Sprint(err, " ", dropped))
		if err != nil {
			out.set(nil, 0)
			fmt.Fprintf(w, "log: %v\n", err)
			w.Flush() // works: a report of writes working again
		}
	}
	w.Write([]byte("lost\n"))
	w.Flush()
	want := []string{"no space left on device 5", "<nil> 5"}
	if fmt.Sprint(reports) != fmt.Sprint(want) {
		t.Fatalf("reports %q, want %q", reports, want)
	}
	if _, got := out.all(); got != "log: no space left on device\n" {
		t.Fatalf("written %q", got)
	}
}

// TestTimerUnderSteadyLines: lines coming faster than the interval are
// written every interval, not held until Close.
func TestTimerUnderSteadyLines(t *testing.T) {
	out := &chunks{}
	w := New(out, 50*time.Millisecond)
	defer w.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		w.Write([]byte("line\n"))
		if n, _ := out.all(); n >= 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("lines every 10 ms for 5 s, with an interval of 50 ms: fewer than 2 writes")
		}
	}
}
