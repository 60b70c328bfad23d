//go:build unix

package logbuf

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestStalledFIFO: a FIFO whose reader stopped reading takes nothing once
// the pipe is full. Write goes on without waiting for it: the lines that
// do not fit while the last buffer is being written are dropped and
// counted; Close gives up after CloseTimeout. When the reader comes back,
// what was kept arrives, in whole lines.
func TestStalledFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	// The reader first (non-blocking, so that opening waits for no
	// writer), then the writer, which a reader lets open at once.
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := New(f, time.Millisecond)
	w.CloseTimeout = 50 * time.Millisecond
	var reports []string
	var reportsMu sync.Mutex
	w.OnError = func(err error, dropped int) {
		reportsMu.Lock()
		defer reportsMu.Unlock()
		reports = append(reports, fmt.Sprint(err))
	}
	line := []byte(strings.Repeat("x", 999) + "\n")
	const lines = 3 * Size / 1000 // more than the pipe and both buffers hold
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range lines {
			w.Write(line)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Write blocked 10 s on a FIFO whose reader stopped (%d lines of %d bytes, buffer %d)", lines, len(line), Size)
	}
	if _, behind := w.Dropped(); behind == 0 {
		t.Fatalf("%d lines of %d bytes to a stalled FIFO: none dropped", lines, len(line))
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case err := <-closed:
		if err == nil {
			t.Fatal("Close: no error, with the FIFO taking nothing")
		}
		t.Logf("Close: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting 10 s for a stalled FIFO")
	}

	// The reader comes back: what was not dropped arrives whole.
	read := make(chan []byte)
	go func() {
		got, _ := io.ReadAll(r)
		read <- got
	}()
	if err := w.Flush(); err != nil {
		t.Fatalf("Flush once the reader is back: %v", err)
	}
	f.Close()
	got := <-read
	failed, behind := w.Dropped()
	if failed != 0 || len(got)%len(line) != 0 || strings.Trim(string(got), "x\n") != "" ||
		uint64(len(got)/len(line))+behind != lines {
		t.Fatalf("read %d bytes (%d whole lines), dropped %d+%d, of %d lines", len(got), len(got)/len(line), failed, behind, lines)
	}
	// The goroutine whose write the reader let through reports it.
	waitFor(t, "the reports", func() bool { reportsMu.Lock(); defer reportsMu.Unlock(); return len(reports) >= 2 })
	reportsMu.Lock()
	defer reportsMu.Unlock()
	if len(reports) != 2 || !strings.Contains(reports[0], "cannot keep up") || reports[1] != "<nil>" {
		t.Fatalf("reports %q, want one of lines dropped and one of writes working again", reports)
	}
}
