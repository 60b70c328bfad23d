//go:build !linux

package rawio

import "errors"

// Raw calls are made on Linux only; New returns nil elsewhere.
const supported = false

var errUnsupported = errors.New("rawio: no raw socket calls on this system")

func (s *Socket) Read(p []byte) (int, error)  { return 0, errUnsupported }
func (s *Socket) Write(p []byte) (int, error) { return 0, errUnsupported }
func (s *Socket) Idle() bool                  { return false }
