// Package logbuf buffers a log's writes and flushes them on a short timer
// and when closed: a write per line costs a system call per request, which
// an access log on a busy server or proxy should not.
//
// The io.Writer is written outside the lock that Write takes: a disk that
// stalls, or a FIFO whose reader stopped reading, holds up no Write. While
// one buffer is being written, lines go to the other; the lines that do not
// fit there are dropped and counted rather than held.
package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Size is a Writer's buffer: the lines of 100 ms at some 13,000 requests a
// second (access lines of about 400 bytes), so that under load the timer,
// not a full buffer, makes most writes and a request seldom makes one.
// A write costs more than its bytes: a blocking system call lets the Go
// scheduler hand the thread's work to another one. A Writer has two
// buffers, one filling while the other is written. (Memory is touched only
// as far as lines fill it.)
const Size = 512 << 10

// DefaultCloseTimeout is how long Close waits, unless told otherwise, for
// the io.Writer to take what is left.
const DefaultCloseTimeout = 5 * time.Second

// ErrBehind is the error OnError hears when lines are dropped because the
// io.Writer takes them slower than they come: both buffers are full, one
// of them still being written.
var ErrBehind = errors.New("the writes cannot keep up: a buffer full while the last is still being written")

// ErrCloseTimeout is the error Close returns when the io.Writer has not
// taken everything within CloseTimeout.
var ErrCloseTimeout = errors.New("writes not done")

// A Writer buffers writes to an io.Writer. It is safe for concurrent use.
// A Write is never split across two writes to the io.Writer, and never
// waits for the io.Writer: one goroutine at a time writes to it.
type Writer struct {
	// OnError, if set before the first Write, hears when lines start to
	// be dropped, with the error (ErrBehind when the io.Writer cannot keep
	// up) and the bytes that write dropped, and when writes work again,
	// with a nil error and all the bytes dropped meanwhile: a log cannot
	// hold lines it cannot write forever. It is called with the Writer
	// unlocked; it may Write and Flush, not Close.
	OnError func(err error, dropped int)

	// CloseTimeout, if set before Close, bounds Close's wait for the
	// io.Writer; DefaultCloseTimeout when zero.
	CloseTimeout time.Duration

	mu      sync.Mutex
	w       io.Writer
	buf     []byte // lines waiting
	spare   []byte // the other buffer, nil while it is being written
	every   time.Duration
	timer   *time.Timer   // runs while buf holds bytes
	writing bool          // a goroutine is writing to w
	idle    chan struct{} // closed when that goroutine stops writing
	due     bool          // buf is to be written once the write under way ends
	closed  bool
	err     error // the last write's

	failing    bool   // lines are being dropped
	dropped    int    // bytes dropped since they started to be
	midline    bool   // a failed write stopped inside a line (the writing goroutine's)
	lostFailed uint64 // lines a write failed to take
	lostBehind uint64 // lines dropped while the io.Writer was busy

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
	b.timer = time.AfterFunc(time.Hour, b.tick)
	b.timer.Stop()
	return b
}

// Write buffers p. When p does not fit, what the buffer holds is handed to
// a goroutine that writes it, unless one is still writing the last
// buffer: then p is dropped (and counted, see Dropped). A p larger than
// the buffer is written whole, after what the buffer held. After Close,
// p is handed over at once, with no timer. Write returns len(p) and no
// error: write errors go to OnError.
func (b *Writer) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	defer b.unlock()
	if len(b.buf)+len(p) > cap(b.buf) {
		switch {
		case b.writing:
			b.behind(p)
			return len(p), nil
		case len(p) > cap(b.buf):
			joined := make([]byte, 0, len(b.buf)+len(p))
			joined = append(append(joined, b.buf...), p...)
			b.buf = b.buf[:0]
			b.timer.Stop()
			b.start()
			go b.drain(joined)
			return len(p), nil
		default:
			b.start()
			go b.drain(b.take())
		}
	}
	if len(b.buf) == 0 && !b.closed {
		b.timer.Reset(b.every)
	}
	b.buf = append(b.buf, p...)
	if b.closed {
		if b.writing {
			b.due = true
		} else {
			b.start()
			go b.drain(b.take())
		}
	}
	return len(p), nil
}

// behind drops p: the buffer is full and the last one still being
// written.
func (b *Writer) behind(p []byte) {
	b.lostBehind += uint64(bytes.Count(p, newline))
	b.drop(ErrBehind, len(p))
	b.due = true
}

var newline = []byte{'\n'}

// start notes a goroutine writing to w, from now until it closes idle.
func (b *Writer) start() {
	b.writing = true
	b.idle = make(chan struct{})
}

// take hands over the buffer, not empty, to a goroutine that will write
// it (drain), and puts the other buffer in its place.
func (b *Writer) take() []byte {
	p := b.buf
	if b.spare == nil {
		b.spare = make([]byte, 0, Size)
	}
	b.buf, b.spare = b.spare, nil
	b.timer.Stop()
	b.due = false
	return p
}

// tick writes what the buffer holds, in the timer's goroutine, or leaves
// it to the goroutine writing, to write next.
func (b *Writer) tick() {
	b.mu.Lock()
	switch {
	case b.writing:
		b.due = true
	case len(b.buf) > 0:
		b.start()
		p := b.take()
		b.mu.Unlock()
		b.drain(p)
		return
	}
	b.mu.Unlock()
}

// drain writes p, then the buffer, as long as it is due, then reports.
// The Writer is unlocked; only one goroutine drains at a time.
func (b *Writer) drain(p []byte) {
	for {
		b.write(p)
		b.mu.Lock()
		if cap(p) == Size {
			b.spare = p[:0]
		}
		if (b.due || b.closed) && len(b.buf) > 0 {
			p = b.take()
			b.mu.Unlock()
			continue
		}
		b.writing, b.due = false, false
		close(b.idle)
		b.unlock()
		return
	}
}

// write writes p to w. A write that follows one that stopped inside a line
// starts on a line of its own. The Writer is unlocked.
func (b *Writer) write(p []byte) {
	var n int
	var err error
	if b.midline {
		if _, err = b.w.Write(newline); err == nil {
			b.midline = false
		}
	}
	if err == nil {
		n, err = b.w.Write(p)
		if err == nil && n < len(p) {
			err = io.ErrShortWrite
		}
		if err != nil {
			b.midline = n > 0 && p[n-1] != '\n'
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = err
	if err != nil {
		b.lostFailed += uint64(bytes.Count(p[n:], newline))
		b.drop(err, len(p)-n)
		return
	}
	if b.failing {
		b.failing = false
		b.report(nil, b.dropped)
		b.dropped = 0
	}
}

// drop notes so many bytes dropped, for the reason err.
func (b *Writer) drop(err error, dropped int) {
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
		b.deliverLocked()
		b.reported.Unlock()
		b.mu.Lock()
		more := len(b.reports) > 0
		b.mu.Unlock()
		if !more {
			return
		}
	}
}

// deliverLocked makes the reports waiting; b.reported is held.
func (b *Writer) deliverLocked() {
	b.mu.Lock()
	reports := b.reports
	b.reports = nil
	b.mu.Unlock()
	for _, r := range reports {
		b.OnError(r.err, r.dropped)
	}
}

// Flush writes what is buffered, waiting for the io.Writer as long as it
// takes, and returns the last write's error.
func (b *Writer) Flush() error {
	b.mu.Lock()
	if b.writing {
		b.due = true
		idle := b.idle
		b.mu.Unlock()
		<-idle
		b.mu.Lock()
	}
	if b.writing || len(b.buf) == 0 {
		// Another goroutine writing again wrote what this one was
		// to flush, or writes what came after it.
		err := b.err
		b.unlock()
		return err
	}
	b.start()
	p := b.take()
	b.mu.Unlock()
	b.drain(p)
	b.mu.Lock()
	err := b.err
	b.unlock()
	return err
}

// Close writes what is buffered and stops the timer; later writes go to
// the io.Writer at once. It waits at most CloseTimeout for the io.Writer:
// what it could not write then is written later, if it ever takes it, and
// Close says so in its error (ErrCloseTimeout); else it returns the last
// write's error. It makes the reports left before it returns.
// The io.Writer stays open.
func (b *Writer) Close() error {
	b.mu.Lock()
	b.closed = true
	b.timer.Stop()
	if !b.writing && len(b.buf) > 0 {
		b.start()
		go b.drain(b.take())
	}
	var idle chan struct{}
	if b.writing {
		idle = b.idle
	}
	b.mu.Unlock()
	if idle != nil {
		wait := b.CloseTimeout
		if wait <= 0 {
			wait = DefaultCloseTimeout
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-idle:
		case <-t.C:
			b.mu.Lock()
			defer b.mu.Unlock()
			return fmt.Errorf("%w after %v: %d bytes still held (lines dropped: %d by failed writes, %d by slow ones)",
				ErrCloseTimeout, wait, len(b.buf), b.lostFailed, b.lostBehind)
		}
	}
	if b.OnError != nil {
		b.reported.Lock()
		b.deliverLocked()
		b.reported.Unlock()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Dropped returns the lines dropped so far: those a write failed to take
// (a line cut by a write that failed inside it counts), and those that
// came while both buffers were full, one still being written.
func (b *Writer) Dropped() (failed, behind uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lostFailed, b.lostBehind
}
