package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// second is the origin's answer to every request after the first: what the
// next request must get, whatever the first answer held.
const second = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"

// FuzzDirectResponse has a real origin answer the direct way's GET (or
// HEAD) with arbitrary bytes, then end its side of the connection; a
// second GET follows. The first answer is what http.ReadResponse makes of
// those bytes, informational answers handed to the trace and skipped, a
// 101 refused: same status, fields, body and trailers, or an
// error where ReadResponse has one. The second GET gets the origin's next
// answer, never bytes left over from the first, and every connection's
// slot is given back in the end.
func FuzzDirectResponse(f *testing.F) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	var answers sync.Map // "/1/<n>" to the bytes of input n
	var conns sync.WaitGroup
	var open sync.Map // the origin's connections
	f.Cleanup(func() {
		ln.Close()
		open.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			open.Store(c, nil)
			go func() {
				defer conns.Done()
				defer open.Delete(c)
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if a, ok := answers.Load(req.URL.Path); ok {
						// The first answer, then the end of what this
						// side sends: a body read to its close ends.
						c.Write(a.([]byte))
						c.(*net.TCPConn).CloseWrite()
						io.Copy(io.Discard, br)
						return
					}
					if _, err := io.WriteString(c, second); err != nil {
						return
					}
				}
			}()
		}
	}()

	for _, s := range []struct {
		a    string
		head bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\njunk", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true},
		{"HTTP/1.1 200 OK\r\n\r\nuntil the end", false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nok\r\n0\r\nX-T: t\r\n\r\n", false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n", false},
		{"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false},
		{strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 6) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false},
		{"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", false},
		{"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false},
		{"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", false},
		{"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false},
		{"HTTP/1.1 999 X\r\nContent-Length: 1\r\n\r\n!", false},
		{"HTTP/1.1 200\r\n\r\n", true},
		{"HTTP/1.1 20 OK\r\n\r\n", false},
		{"", false},
	} {
		f.Add([]byte(s.a), s.head)
	}
	var next atomic.Int64
	f.Fuzz(func(t *testing.T, a []byte, head bool) {
		method := "GET"
		if head {
			method = "HEAD"
		}
		n := next.Add(1)
		first := fmt.Sprintf("/1/%d", n)
		answers.Store(first, a)
		defer answers.Delete(first)

		want := readReference(a, method)

		addr := ln.Addr().String()
		s := newSlots(4)
		d := newDirect(dialTo(addr), s, 10*time.Second, time.Minute, transportOn)
		defer d.closeOther()
		defer d.CloseIdle()
		var got1xx []int
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			Got1xxResponse: func(code int, _ textproto.MIMEHeader) error { got1xx = append(got1xx, code); return nil },
		})
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+addr+first, nil)
		resp, err := d.RoundTrip(req)
		switch {
		case err != nil && want.err == nil:
			t.Fatalf("%s %q: %v; ReadResponse reads %d", method, a, err, want.status)
		case err == nil && want.err != nil:
			resp.Body.Close()
			t.Fatalf("%s %q: %d; ReadResponse fails: %v", method, a, resp.StatusCode, want.err)
		case err == nil:
			body, berr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want.status || !reflect.DeepEqual(resp.Header, want.header) {
				t.Fatalf("%s %q: %d %v; ReadResponse reads %d %v", method, a, resp.StatusCode, resp.Header, want.status, want.header)
			}
			if !bytes.Equal(body, want.body) || (berr == nil) != (want.bodyErr == nil) {
				t.Fatalf("%s %q: body %q (%v); ReadResponse reads %q (%v)", method, a, body, berr, want.body, want.bodyErr)
			}
			if !reflect.DeepEqual(resp.Trailer, want.trailer) {
				t.Fatalf("%s %q: trailers %v; ReadResponse reads %v", method, a, resp.Trailer, want.trailer)
			}
			if !reflect.DeepEqual(got1xx, want.info) {
				t.Fatalf("%s %q: informational answers %v; ReadResponse reads %v", method, a, got1xx, want.info)
			}
		}

		// Whatever came first, the next request gets the next answer.
		req, _ = http.NewRequest("GET", "http://"+addr+"/2", nil)
		resp, err = d.RoundTrip(req)
		if err != nil {
			t.Fatalf("after %s %q: second GET: %v", method, a, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "second" || err != nil {
			t.Fatalf("after %s %q: second GET: %d %q (%v), want 200 \"second\"", method, a, resp.StatusCode, body, err)
		}

		d.CloseIdle()
		s.mu.Lock()
		open := s.n
		s.mu.Unlock()
		if open != 0 {
			t.Fatalf("after %s %q: %d slots still taken with every connection closed", method, a, open)
		}
	})
}

// reference is what http.ReadResponse makes of an origin's bytes, read as
// the direct way reads them.
type reference struct {
	err     error
	info    []int
	status  int
	header  http.Header
	body    []byte
	bodyErr error
	trailer http.Header
}

func readReference(a []byte, method string) reference {
	req, _ := http.NewRequest(method, "http://origin.test/", nil)
	br := bufio.NewReader(bytes.NewReader(a))
	var ref reference
	for {
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return reference{err: err}
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return reference{err: fmt.Errorf("101 unasked")}
		}
		if resp.StatusCode < 100 || resp.StatusCode >= 200 {
			ref.status, ref.header = resp.StatusCode, resp.Header
			ref.body, ref.bodyErr = io.ReadAll(resp.Body)
			ref.trailer = resp.Trailer
			return ref
		}
		ref.info = append(ref.info, resp.StatusCode)
	}
}
