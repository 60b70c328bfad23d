//go:build linux && !386 && !race && !msan && !asan

package rawio

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"
)

const supported = true

// maxIO bounds one system call: the thread holds its processor through it,
// and a collection waits for it to end.
const maxIO = 64 << 10

// errBadCount is the kernel saying it wrote more than it was given (Go
// issue 61060), which would otherwise slice past the buffer.
var errBadCount = errors.New("rawio: the kernel reported more bytes written than given")

func (s *Socket) init() {
	s.rd.call = s.rd.read
	s.wr.call = s.wr.write
}

func (o *op) read(fd uintptr) bool {
	for {
		p := o.p[:min(len(o.p), maxIO)]
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until it is readable
		}
		o.n, o.errno = int(n), errno
		return true
	}
}

func (o *op) write(fd uintptr) bool {
	for o.n < len(o.p) {
		q := o.p[o.n:min(len(o.p), o.n+maxIO)]
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(q))), uintptr(len(q)))
		switch errno {
		case 0:
			// As poll.FD.Write: nothing written is an unexpected end,
			// more than given is the kernel's error.
			if n == 0 {
				o.err = io.ErrUnexpectedEOF
				return true
			}
			if int(n) > len(q) {
				o.err = errBadCount
				return true
			}
			o.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until it is writable
		default:
			o.errno = errno
			return true
		}
	}
	return true
}

// Read reads into p: what the socket holds, up to len(p), waiting in the
// netpoller while it holds nothing.
func (s *Socket) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if len(p) == 0 {
		// Nothing read, but a closed connection says so (as
		// poll.FD.Read, which takes its lock first).
		if err := s.raw.Read(func(uintptr) bool { return true }); err != nil {
			return 0, s.opError("read", err)
		}
		return 0, nil
	}
	o := &s.rd
	o.p, o.n, o.errno = p, 0, 0
	err := s.raw.Read(o.call)
	o.p = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case o.errno != 0:
		return 0, s.opError("read", os.NewSyscallError("read", o.errno))
	case o.n == 0:
		return 0, io.EOF
	}
	return o.n, nil
}

// Write writes all of p, waiting in the netpoller while the socket's
// buffer is full.
func (s *Socket) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	o := &s.wr
	o.p, o.n, o.errno, o.err = p, 0, 0, nil
	err := s.raw.Write(o.call)
	o.p = nil
	switch {
	case err != nil:
		return o.n, s.opError("write", err)
	case o.errno != 0:
		return o.n, s.opError("write", os.NewSyscallError("write", o.errno))
	case o.err != nil:
		return o.n, s.opError("write", o.err)
	}
	return o.n, nil
}

// Idle reports whether the socket is open with nothing to read: the peer
// has neither closed it nor sent anything. One non-blocking peek, no wait.
func (s *Socket) Idle() bool {
	idle := false
	err := s.raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		idle = errno == syscall.EAGAIN
		return true
	})
	return err == nil && idle
}
