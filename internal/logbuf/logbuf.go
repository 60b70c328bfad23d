// Package logbuf buffers a log's writes and flushes them on a short timer
// and when closed: a write per line costs a system call per request, which
// an access log on a busy server or proxy should not.
package logbuf

import (
	"io"
	"sync"
	"time"
)

// Size is a Writer's buffer: the lines of 100 ms at some 15,000 requests a
// second, so that under load the timer, not a full buffer, makes the
// writes, and a request rarely waits on one. A write costs more than its
// bytes: a blocking system call lets the Go scheduler hand the thread's
// work to another one. (Memory is touched only as far as lines fill it.)
const Size = 512 << 10

// A Writer buffers writes to an io.Writer. It is safe for concurrent use.
// A Write is never split across two writes to the io.Writer.
type Writer struct {
	// OnError, if set before the first Write, hears of the first failed
	// write of a run of them, with how many bytes it dropped: a log
	// cannot hold lines it cannot write forever. It is called with the
	// Writer locked: it must not write to it.
	OnError func(err error, dropped int)

	mu      sync.Mutex
	w       io.Writer
	buf     []byte
	every   time.Duration
	timer   *time.Timer // runs while buf holds bytes
	armed   bool
	closed  bool
	failing bool // the last write failed
}

// New returns a Writer to w that writes what it holds every interval
// (counted from the first byte it holds) and at Close. An idle Writer
// sets no timer.
func New(w io.Writer, every time.Duration) *Writer {
	b := &Writer{w: w, buf: make([]byte, 0, Size), every: every}
	b.timer = time.AfterFunc(time.Hour, func() { b.Flush() })
	b.timer.Stop()
	return b
}

// Write buffers p. It writes what the buffer holds first when p does not
// fit, and p at once when it is larger than the buffer or the Writer is
// closed.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > cap(b.buf) || b.closed {
		b.flushLocked()
		if len(p) > cap(b.buf) || b.closed {
			return b.write(p)
		}
	}
	b.buf = append(b.buf, p...)
	if !b.armed {
		b.armed = true
		b.timer.Reset(b.every)
	}
	return len(p), nil
}

// Flush writes what is buffered.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *Writer) flushLocked() error {
	if b.armed {
		b.armed = false
		b.timer.Stop()
	}
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// write writes p to w, reporting the first failure of a run.
func (b *Writer) write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil && !b.failing && b.OnError != nil {
		b.OnError(err, len(p)-n)
	}
	b.failing = err != nil
	return n, err
}

// Close writes what is buffered and stops the timer; later writes go to
// the io.Writer at once. The io.Writer stays open.
func (b *Writer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return b.flushLocked()
}
