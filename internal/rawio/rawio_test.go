package rawio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns both ends of a loopback TCP connection.
func pair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

type way struct {
	name string
	wrap func(t testing.TB, c *net.TCPConn) net.Conn
}

// ways are the ways to read and write a connection: its own methods, and
// its Socket's where this build makes raw calls (not under the race
// detector: TestNew). Each test runs them all and expects the same.
var ways = func() []way {
	w := []way{{"net.Conn", func(t testing.TB, c *net.TCPConn) net.Conn { return c }}}
	if supported {
		w = append(w, way{"Socket", func(t testing.TB, c *net.TCPConn) net.Conn {
			w := Wrap(c)
			if _, ok := w.(*Conn); !ok {
				t.Fatalf("Wrap(%T) = %T, want *rawio.Conn", c, w)
			}
			return w
		}})
	}
	return w
}()

// TestNew: a Socket for a TCP connection where this build makes raw calls,
// and for nothing else.
func TestNew(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if s := New(a); s != nil {
		t.Errorf("New(net.Pipe) = %v, want nil", s)
	}
	if w := Wrap(a); w != a {
		t.Errorf("Wrap(net.Pipe) = %T, want the conn itself", w)
	}
	c, _ := pair(t)
	if s := New(c); (s != nil) != supported {
		t.Errorf("New(TCP) = %v with raw calls %v in this build", s, supported)
	}
}

// TestRoundTrip: 8 MiB each way at once, through a reader that takes
// small, slow reads, so that writes fill the socket's buffer and wait.
func TestRoundTrip(t *testing.T) {
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			a, b := pair(t)
			ca, cb := w.wrap(t, a), w.wrap(t, b)
			data := make([]byte, 8<<20)
			for i := range data {
				data[i] = byte(rand.Uint32())
			}
			var wg sync.WaitGroup
			echo := func(from, to net.Conn, got *bytes.Buffer) {
				defer wg.Done()
				buf := make([]byte, 1000)
				for got.Len() < len(data) {
					n, err := from.Read(buf)
					got.Write(buf[:n])
					if err != nil {
						t.Errorf("read after %d bytes: %v", got.Len(), err)
						return
					}
				}
			}
			var gotA, gotB bytes.Buffer
			wg.Add(2)
			go echo(ca, cb, &gotA)
			go echo(cb, ca, &gotB)
			for _, c := range []net.Conn{ca, cb} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if n, err := c.Write(data); n != len(data) || err != nil {
						t.Errorf("write: %d of %d bytes, %v", n, len(data), err)
					}
				}()
			}
			wg.Wait()
			if !bytes.Equal(gotA.Bytes(), data) || !bytes.Equal(gotB.Bytes(), data) {
				t.Errorf("bytes differ after the round trip")
			}
		})
	}
}

// TestWritesWhole: Writes from several goroutines at once reach the peer
// each in one piece, as a net.Conn's do (an HTTP/2 server and its
// handlers' writes may share a connection).
func TestWritesWhole(t *testing.T) {
	const writers, writes, size = 4, 50, 200 << 10 // each larger than a system call's bound
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			a, b := pair(t)
			c := w.wrap(t, a)
			var wg sync.WaitGroup
			for i := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					block := bytes.Repeat([]byte{byte('a' + i)}, size)
					for range writes {
						if _, err := c.Write(block); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			go func() { wg.Wait(); c.Close() }()
			got, err := io.ReadAll(b)
			if err != nil || len(got) != writers*writes*size {
				t.Fatalf("read %d bytes, %v; want %d", len(got), err, writers*writes*size)
			}
			for off := 0; off < len(got); off += size {
				if blk := got[off : off+size]; bytes.Count(blk, blk[:1]) != size {
					t.Fatalf("the write at offset %d is mixed with another", off)
				}
			}
		})
	}
}

// outcome classifies an error as the callers of a net.Conn do.
func outcome(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "nil"
	case err == io.EOF:
		return "EOF"
	case errors.Is(err, net.ErrClosed):
		return "closed"
	case errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	}
	return "other: " + err.Error()
}

// TestErrorsAsNetConn: each way ends the same, and its error reads the
// same as the net.Conn's: the operation and the addresses first.
func TestErrorsAsNetConn(t *testing.T) {
	cases := []struct {
		name string
		op   string
		want string
		run  func(c net.Conn, peer *net.TCPConn) error
	}{
		{"end of stream", "read", "EOF", func(c net.Conn, peer *net.TCPConn) error {
			peer.Close()
			_, err := c.Read(make([]byte, 10))
			return err
		}},
		{"empty read", "read", "nil", func(c net.Conn, peer *net.TCPConn) error {
			n, err := c.Read(nil)
			if n != 0 {
				return errors.New("read into nothing returned bytes")
			}
			return err
		}},
		{"empty read after close", "read", "closed", func(c net.Conn, peer *net.TCPConn) error {
			c.Close()
			_, err := c.Read(nil)
			return err
		}},
		{"empty write", "write", "nil", func(c net.Conn, peer *net.TCPConn) error {
			n, err := c.Write(nil)
			if n != 0 {
				return errors.New("write of nothing wrote bytes")
			}
			return err
		}},
		{"empty write after close", "write", "closed", func(c net.Conn, peer *net.TCPConn) error {
			c.Close()
			_, err := c.Write(nil)
			return err
		}},
		{"read deadline", "read", "timeout", func(c net.Conn, peer *net.TCPConn) error {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, err := c.Read(make([]byte, 10))
			return err
		}},
		{"deadline past", "read", "timeout", func(c net.Conn, peer *net.TCPConn) error {
			c.SetReadDeadline(time.Unix(1, 0))
			_, err := c.Read(make([]byte, 10))
			return err
		}},
		{"closed while waiting", "read", "closed", func(c net.Conn, peer *net.TCPConn) error {
			time.AfterFunc(20*time.Millisecond, func() { c.Close() })
			_, err := c.Read(make([]byte, 10))
			return err
		}},
		{"read after close", "read", "closed", func(c net.Conn, peer *net.TCPConn) error {
			c.Close()
			_, err := c.Read(make([]byte, 10))
			return err
		}},
		{"peer reset", "read", "reset", func(c net.Conn, peer *net.TCPConn) error {
			peer.SetLinger(0)
			peer.Close()
			time.Sleep(20 * time.Millisecond)
			_, err := c.Read(make([]byte, 10))
			return err
		}},
		{"write deadline", "write", "timeout", func(c net.Conn, peer *net.TCPConn) error {
			// The peer reads nothing: the buffers fill.
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, err := c.Write(make([]byte, 64<<20))
			return err
		}},
		{"write after reset", "write", "reset", func(c net.Conn, peer *net.TCPConn) error {
			peer.SetLinger(0)
			peer.Close()
			time.Sleep(20 * time.Millisecond)
			var err error
			for range 3 { // the first may go out before the reset is known
				if _, err = c.Write([]byte("x")); err != nil {
					break
				}
			}
			return err
		}},
		{"write after close", "write", "closed", func(c net.Conn, peer *net.TCPConn) error {
			c.Close()
			_, err := c.Write([]byte("x"))
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, w := range ways {
				a, b := pair(t)
				c := w.wrap(t, a)
				err := tc.run(c, b)
				if got := outcome(err); got != tc.want {
					t.Errorf("%s: %s (%v), want %s", w.name, got, err, tc.want)
				}
				if err == nil || err == io.EOF {
					continue
				}
				if prefix := tc.op + " tcp " + a.LocalAddr().String() + "->" + a.RemoteAddr().String() + ": "; !strings.HasPrefix(err.Error(), prefix) {
					t.Errorf("%s: error %q, want it to begin %q", w.name, err, prefix)
				}
			}
		})
	}
}

// TestIdle: open with nothing to read, and nothing else.
func TestIdle(t *testing.T) {
	cases := []struct {
		name string
		do   func(c, peer *net.TCPConn)
		want bool
	}{
		{"open and quiet", func(c, peer *net.TCPConn) {}, true},
		{"peer wrote", func(c, peer *net.TCPConn) { peer.Write([]byte("HTTP/1.1 408")) }, false},
		{"peer closed", func(c, peer *net.TCPConn) { peer.Close() }, false},
		{"peer reset", func(c, peer *net.TCPConn) { peer.SetLinger(0); peer.Close() }, false},
		{"closed here", func(c, peer *net.TCPConn) { c.Close() }, false},
	}
	if !supported {
		return // TestNew: no Socket in this build
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t)
			s := New(c)
			tc.do(c, peer)
			time.Sleep(20 * time.Millisecond) // for the peer's bytes to arrive
			if got := s.Idle(); got != tc.want {
				t.Errorf("Idle() = %v, want %v", got, tc.want)
			}
			if tc.want {
				// Nothing was taken: the peer's next bytes read whole.
				peer.Write([]byte("ok"))
				buf := make([]byte, 2)
				if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ok" {
					t.Errorf("read after Idle: %q %v", buf, err)
				}
			}
		})
	}
}
