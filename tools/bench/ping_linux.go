package main

import (
	"fmt"
	"net/netip"
	"syscall"
	"time"
	"unsafe"
)

// pingRedis sends n PINGs to the Redis server at addr, one at a time, on a
// blocking socket written and read with raw system calls (two a PING, no
// event loop, no scheduler), and returns this process's CPU time per PING:
// the least a client pays for a round trip to that server.
func pingRedis(addr string, n int) (time.Duration, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return 0, fmt.Errorf("ping-redis: %q is not an IPv4 address and port", addr)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return 0, err
	}
	defer syscall.Close(fd)
	if err := syscall.Connect(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		return 0, fmt.Errorf("ping-redis: connect %s: %w", addr, err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); err != nil {
		return 0, err
	}
	// A Redis that stops answering ends the run (EAGAIN) instead of
	// holding it.
	tv := syscall.NsecToTimeval(int64(5 * time.Second))
	for _, opt := range []int{syscall.SO_RCVTIMEO, syscall.SO_SNDTIMEO} {
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, opt, &tv); err != nil {
			return 0, err
		}
	}
	ping, pong := []byte("PING\r\n"), "+PONG\r\n"
	buf := make([]byte, 64)
	raw := func(trap uintptr, p []byte) (int, error) {
		// The runtime's preemption signal interrupts a blocking call
		// (EINTR), which then starts its timeout anew: this bounds the
		// whole call.
		deadline := time.Now().Add(5 * time.Second)
		for {
			k, _, errno := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
			switch errno {
			case 0:
				return int(k), nil
			case syscall.EINTR:
				if time.Now().After(deadline) {
					return 0, fmt.Errorf("no answer within 5 s")
				}
			case syscall.EAGAIN:
				return 0, fmt.Errorf("no answer within 5 s")
			default:
				return 0, errno
			}
		}
	}
	one := func() error {
		if k, err := raw(syscall.SYS_WRITE, ping); err != nil || k != len(ping) {
			return fmt.Errorf("ping-redis: wrote %d of %d bytes: %v", k, len(ping), err)
		}
		got := 0
		for got < len(pong) {
			k, err := raw(syscall.SYS_READ, buf[got:])
			if err != nil {
				return err
			}
			if k == 0 {
				return fmt.Errorf("ping-redis: %s closed the connection", addr)
			}
			got += k
		}
		if string(buf[:got]) != pong {
			return fmt.Errorf("ping-redis: %s answered %q", addr, buf[:got])
		}
		return nil
	}
	for range 100 { // warm
		if err := one(); err != nil {
			return 0, err
		}
	}
	before := selfCPU()
	for range n {
		if err := one(); err != nil {
			return 0, err
		}
	}
	return (selfCPU() - before) / time.Duration(n), nil
}

// selfCPU is this process's CPU time, user and system.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
