package clienthello

import (
	"net"
	"testing"

	"github.com/pires/go-proxyproto"

	"github.com/req-mtls/req-mtls/internal/rawio"
)

// TestRawSocketOnlyOnBareTCP: a Conn reads its socket directly (rawio) only
// when it wraps the TCP connection itself; under a PROXY protocol header's
// reader, which buffers what it read past the header, it reads through it.
func TestRawSocketOnlyOnBareTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	tcp, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	raw := func(c *Conn) bool { _, ok := c.rw.(*rawio.Conn); return ok }
	if got, want := raw(NewConn(tcp, nil)), rawio.New(tcp) != nil; got != want {
		t.Errorf("bare TCP: raw socket %v, want %v (as rawio.New)", got, want)
	}
	if c := NewConn(proxyproto.NewConn(tcp), nil); raw(c) {
		t.Errorf("under a PROXY protocol reader: the socket is read directly, past its buffer")
	}
}
