// Package logbuf buffers a log's writes and flushes them on a short timer
// and when closed: a write per line costs a system call per request, which
// an access log on a busy server or proxy should not.
package logbuf

import (
	"io"
	"sync"
	"time"
)

// Size is a Writer's buffer: the lines of 100 ms at some 13,000 requests a
// second (access lines of about 400 bytes), so that under load the timer,
// not a full buffer, makes most writes and a request seldom makes one
// (it may wait for the lock while the timer's goroutine writes). A write
// costs more than its bytes: a blocking system call lets the Go scheduler
// hand the thread's work to another one. (Memory is touched only as far as
// lines fill it.)
const Size = 512 << 10

// A Writer buffers writes to an io.Writer. It is safe for concurrent use.
// A Write is never split across two writes to the io.Writer.
type Writer struct {
	// OnError, if set before the first Write, hears when writes start to
	// fail, with the error and the bytes that write dropped, and when
	// they work again, with a nil error and all the bytes dropped
	// meanwhile: a log cannot hold lines it cannot write forever. It is
	// called with the Writer unlocked.
	OnError func(err error, dropped int)

	mu       sync.Mutex
	w        io.Writer
	buf      []byte
	every    time.Duration
	timer    *time.Timer // runs while buf holds bytes
	closed   bool
	failing  bool       // the last write failed
	dropped  int        // bytes dropped since writes started to fail
	midline  bool       // a failed write stopped inside a line
	reports  []report   // OnError's calls to make
	reported sync.Mutex // held by the goroutine making them
}

// A report is a call of OnError to make.
type report struct {
	err     error
	dropped int
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
	if len(p) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	defer b.unlock()
	if len(b.buf)+len(p) > cap(b.buf) || b.closed {
		b.flushLocked()
		if len(p) > cap(b.buf) || b.closed {
			return b.write(p)
		}
	}
	if len(b.buf) == 0 {
		b.timer.Reset(b.every)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// Flush writes what is buffered.
func (b *Writer) Flush() error {
	b.mu.Lock()
	defer b.unlock()
	return b.flushLocked()
}

// unlock unlocks b.mu, then makes the reports the writes left.
func (b *Writer) unlock() {
	pending := len(b.reports) > 0
	b.mu.Unlock()
	if pending {
		b.deliver()
	}
}

// deliver calls OnError with the reports waiting, in order. One goroutine
// at a time delivers; one that finds another delivering leaves its reports
// to it (OnError itself may write to b).
func (b *Writer) deliver() {
	for b.reported.TryLock() {
		b.mu.Lock()
		reports := b.reports
		b.reports = nil
		b.mu.Unlock()
		for _, r := range reports {
			b.OnError(r.err, r.dropped)
		}
		b.reported.Unlock()
		b.mu.Lock()
		more := len(b.reports) > 0
		b.mu.Unlock()
		if !more {
			return
		}
	}
}

func (b *Writer) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	b.timer.Stop()
	_, err := b.write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// write writes p to w. A write that follows one that stopped inside a line
// starts on a line of its own.
func (b *Writer) write(p []byte) (int, error) {
	if b.midline {
		if _, err := b.w.Write([]byte{'\n'}); err != nil {
			b.failed(err, len(p))
			return 0, err
		}
		b.midline = false
	}
	n, err := b.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		b.midline = n > 0 && p[n-1] != '\n'
		b.failed(err, len(p)-n)
		return n, err
	}
	if b.failing {
		b.failing = false
		b.report(nil, b.dropped)
		b.dropped = 0
	}
	return n, nil
}

// failed notes a write that failed, dropping so many bytes.
func (b *Writer) failed(err error, dropped int) {
	if !b.failing {
		b.report(err, dropped)
	}
	b.failing = true
	b.dropped += dropped
}

// report queues a call of OnError, if set.
func (b *Writer) report(err error, dropped int) {
	if b.OnError != nil {
		b.reports = append(b.reports, report{err, dropped})
	}
}

// Close writes what is buffered and stops the timer; later writes go to
// the io.Writer at once. The io.Writer stays open.
func (b *Writer) Close() error {
	b.mu.Lock()
	defer b.unlock()
	b.closed = true
	return b.flushLocked()
}
