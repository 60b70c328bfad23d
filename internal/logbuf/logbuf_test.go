package logbuf

import (
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testutil"
)

// TestWriter: lines wait in the buffer, reach the writer on the timer, and
// nothing is lost at Close.
func TestWriter(t *testing.T) {
	var out testutil.Buffer
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
