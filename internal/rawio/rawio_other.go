//go:build !linux || 386 || race || msan || asan

package rawio

import "errors"

// Raw calls are made on Linux (but 386, whose socket calls go through
// socketcall), and not under the race detector or the memory sanitizers:
// those learn of a system call's buffers, and of the order it makes
// between a write and the read at the other end, only from package
// syscall's own wrappers. New returns nil.
const supported = false

var errUnsupported = errors.New("rawio: no raw socket calls on this system")

func (s *Socket) Read(p []byte) (int, error)  { return 0, errUnsupported }
func (s *Socket) Write(p []byte) (int, error) { return 0, errUnsupported }
func (s *Socket) Idle() bool                  { return false }
func (s *Socket) init()                       {}
