package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
)

// FuzzDialTunnel has a proxy answer the client's CONNECT with arbitrary
// bytes, then close. A 2xx answer (as http.ReadResponse reads it) is a
// tunnel whose first bytes are the ones after the answer's header; any
// other is an error whose message holds no raw control character, however
// the proxy wrote its status line.
func FuzzDialTunnel(f *testing.F) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	answers := make(chan []byte)
	var wg sync.WaitGroup
	f.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a := <-answers
			if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				c.Write(a)
			}
			c.Close()
		}
	}()
	p := &url.URL{Scheme: "http", Host: ln.Addr().String()}

	for _, a := range []string{
		"HTTP/1.1 200 Connection established\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x01",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.0 204 No Content\r\n\r\n",
		"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 403 \x1b[31mForbidden\x1b[0m\r\n\r\n",
		"HTTP/1.1 502 bad\x00gateway\r\n\r\n",
		"HTTP/1.1 302 Found\r\nLocation: /\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 20 OK\r\n\r\n",
		"garbage",
		"",
	} {
		f.Add([]byte(a))
	}
	f.Fuzz(func(t *testing.T, a []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Whatever the proxy answers is read here: accepted, or the
		// dial failed first.
		type result struct {
			c   net.Conn
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := (&Client{}).dialTunnel(ctx, p, "origin.test:443")
			done <- result{c, err}
		}()
		answers <- a
		r := <-done

		req := &http.Request{Method: "CONNECT", URL: &url.URL{Opaque: "origin.test:443"}, Host: "origin.test:443"}
		br := bufio.NewReader(bytes.NewReader(a))
		resp, rerr := http.ReadResponse(br, req)
		if r.err != nil {
			if rerr == nil && resp.StatusCode/100 == 2 {
				t.Fatalf("%q: %v; ReadResponse reads %d", a, r.err, resp.StatusCode)
			}
			if ctx.Err() != nil {
				t.Fatalf("%q: still waiting after 10 s: %v", a, r.err)
			}
			msg := r.err.Error()
			var e *Error
			if errors.As(r.err, &e) {
				msg += " " + e.Hint
			}
			if i := strings.IndexFunc(msg, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }); i >= 0 {
				t.Fatalf("%q: error %q holds a raw control character at %d", a, msg, i)
			}
			return
		}
		defer r.c.Close()
		if rerr != nil || resp.StatusCode/100 != 2 {
			t.Fatalf("%q: a tunnel; ReadResponse reads %v (%v)", a, resp, rerr)
		}
		// The tunnel starts right after the header, whatever it says of
		// a body.
		want, _ := io.ReadAll(br)
		r.c.SetDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(r.c)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%q: the tunnel reads %q (%v), want %q", a, got, err, want)
		}
	})
}
