// Package rawio reads and writes TCP sockets with system calls that the Go
// scheduler is not told about.
//
// A net.Conn tells the scheduler about each read and write it makes
// (entersyscall, exitsyscall), so that a thread blocked in one does not
// hold up every other goroutine. A socket from package net never blocks:
// it is non-blocking, and a call that would block returns EAGAIN and the
// goroutine waits in the netpoller. For such a socket the notice buys
// nothing, and it costs. On a server pinned to one CPU it costs a great
// deal: a call that outlasts a tick of the scheduler's monitor thread (20
// µs; a write to a loopback socket, which runs the receiving end's TCP
// stack too, often does) has its processor handed to another thread. That
// thread wakes, and the first waits to get the processor back. Each such
// call costs two context switches, and it keeps the monitor waking
// thousands of times a second. Behind the gateway's kept-alive HTTP/2
// benchmark, a third of the server's CPU went to this.
//
// A Socket makes the same calls with syscall.RawSyscall, inside the
// connection's syscall.RawConn, so deadlines, Close and the netpoller's
// wait behave as they do for the net.Conn. Errors read as the net.Conn's
// would: io.EOF at the end of the stream, a *net.OpError ("read" or
// "write") around the errno, a deadline, or net.ErrClosed.
//
// The price: a call that does wait in the kernel (for the socket's lock
// while another thread holds it, for memory, for a page fault on the
// buffer) holds its processor, and a collection's stop waits for it.
// Calls are bounded to maxIO bytes to keep such waits short. Builds with
// the race detector or a sanitizer, and 386, use the net.Conn (New
// returns nil): see rawio_other.go.
package rawio

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

// Socket reads and writes one TCP connection's socket.
type Socket struct {
	c   net.Conn
	raw rawConn

	rmu, wmu sync.Mutex // one read and one write at a time, in rd and wr
	rd, wr   op
}

// op is one read or write in progress: the callback that RawConn calls
// with the socket, bound once (a closure per call would cost three
// allocations), and what it found.
type op struct {
	p     []byte
	n     int
	errno syscall.Errno
	err   error
	call  func(fd uintptr) bool
}

// New returns c's socket, or nil when c is not a *net.TCPConn or this
// system makes no raw calls (then use c itself).
func New(c net.Conn) *Socket {
	tc, ok := c.(*net.TCPConn)
	if !ok || !supported {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &Socket{c: c, raw: rc}
	s.init()
	return s
}

// rawConn is the part of syscall.RawConn a Socket uses.
type rawConn interface {
	Read(f func(fd uintptr) bool) error
	Write(f func(fd uintptr) bool) error
}

// opError describes err as the net.Conn's Read or Write would: op (not
// "raw-read" or "raw-write") on the connection's addresses.
func (s *Socket) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		oe.Op = op // a new value for each call
		return oe
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.c.LocalAddr(), Addr: s.c.RemoteAddr(), Err: err}
}

// Conn is a net.Conn whose Read and Write are its Socket's. Its other
// methods are the connection's own.
type Conn struct {
	net.Conn
	s *Socket
}

// Wrap returns c with the Socket's Read and Write, or c itself when New
// returns nil.
func Wrap(c net.Conn) net.Conn {
	if s := New(c); s != nil {
		return &Conn{Conn: c, s: s}
	}
	return c
}

func (c *Conn) Read(p []byte) (int, error)  { return c.s.Read(p) }
func (c *Conn) Write(p []byte) (int, error) { return c.s.Write(p) }
