package rawio

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

const supported = true

// maxWrite bounds one write system call: the thread holds its processor
// through it, and a collection waits for it to end.
const maxWrite = 64 << 10

// Read reads into p: what the socket holds, up to len(p), waiting in the
// netpoller while it holds nothing.
func (s *Socket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno syscall.Errno
	err := s.raw.Read(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
			switch errno {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait until it is readable
			}
			return true
		}
	})
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case errno != 0:
		return 0, s.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

// Write writes all of p, waiting in the netpoller while the socket's
// buffer is full.
func (s *Socket) Write(p []byte) (int, error) {
	done := 0
	var errno syscall.Errno
	err := s.raw.Write(func(fd uintptr) bool {
		for done < len(p) {
			q := p[done:min(len(p), done+maxWrite)]
			n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(q))), uintptr(len(q)))
			switch e {
			case 0:
				done += int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait until it is writable
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return done, s.opError("write", err)
	case errno != 0:
		return done, s.opError("write", os.NewSyscallError("write", errno))
	}
	return done, nil
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
