package logbuf

import (
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWriter: lines wait in the buffer, reach the writer on the timer, and
// nothing is lost at Close.
func TestWriter(t *testing.T) {
	var out syncBuffer
	w := New(&out, 50*time.Millisecond)
	w.Write([]byte("one\n"))
	if out.String() != "" {
		t.Fatal("written at once, not buffered")
	}
	for deadline := time.Now().Add(5 * time.Second); out.String() == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	if out.String() != "one\n" {
		t.Fatalf("after the timer: %q", out.String())
	}
	w.Write([]byte("two\n"))
	w.Close()
	if out.String() != "one\ntwo\n" {
		t.Fatalf("after Close: %q", out.String())
	}
}
