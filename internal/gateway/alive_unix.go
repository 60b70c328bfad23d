//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package gateway

import "syscall"

// alive reports whether an idle connection is still open with nothing to
// read: the origin may have closed it, or sent something unasked (a 408
// before closing), while it sat in the pool. One non-blocking peek at the
// socket, no wait.
func (pc *pconn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	if pc.sock != nil {
		return pc.sock.Idle()
	}
	if pc.raw == nil {
		return true
	}
	alive := true
	pc.raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n <= 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true
	})
	return alive
}
