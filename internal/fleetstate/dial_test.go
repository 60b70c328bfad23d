package fleetstate

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestCheckAfterFreshRead: go-redis's check before use (the RawConn's
// Read) takes a connection that read an answer within its fresh time as
// open without a look; past it, the check looks, and finds what is there
// to read (here a byte the peer sent unasked, which a look must report by
// making go-redis's read).
func TestCheckAfterFreshRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(peer)
			return
		}
		peer <- c
	}()
	c, err := dialer(time.Second, nil)(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, ok := c.(*redisConn)
	if !ok {
		t.Skip("SKIP: this build makes no raw calls (race detector, sanitizer or 386): the connection is the net.Conn")
	}
	p, ok := <-peer
	if !ok {
		t.Fatal("no connection accepted")
	}
	defer p.Close()

	check := func(fresh time.Duration) (read bool) {
		rc.fresh = fresh
		sc, err := rc.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Read(func(uintptr) bool { read = true; return true }); err != nil {
			t.Fatal(err)
		}
		return read
	}
	if check(0) {
		t.Fatal("an open connection with nothing to read: the check read")
	}
	if _, err := p.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := rc.Read(buf); n == 0 || err != nil {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	if _, err := p.Write([]byte("x")); err != nil { // out of step
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); rc.s.Idle(); {
		if time.Now().After(deadline) {
			t.Fatal("the peer's byte never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	if check(time.Hour) {
		t.Error("a connection that read an answer within its fresh time was looked at")
	}
	if !check(0) {
		t.Error("past its fresh time, a connection with a byte to read passed the check unread")
	}
}
