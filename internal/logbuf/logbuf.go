// Package logbuf buffers a log's writes and flushes them on a short timer
// and when closed: a write per line costs a system call per request, which
// an access log on a busy server or proxy should not.
package logbuf

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// A Writer buffers writes to an io.Writer. It is safe for concurrent use.
type Writer struct {
	mu   sync.Mutex
	w    *bufio.Writer
	stop chan struct{}
	done chan struct{}
}

// New returns a Writer to w that flushes every interval and at Close.
func New(w io.Writer, every time.Duration) *Writer {
	b := &Writer{w: bufio.NewWriterSize(w, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				b.Flush()
			case <-b.stop:
				return
			}
		}
	}()
	return b
}

// Write buffers p (a full buffer is written at once).
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Write(p)
}

// Flush writes what is buffered.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.w.Flush()
}

// Close stops the timer and flushes what is buffered; the writer under it
// stays open.
func (b *Writer) Close() error {
	close(b.stop)
	<-b.done
	return b.Flush()
}
