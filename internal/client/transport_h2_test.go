package client

// The Transport against an HTTP/2 server written frame by frame, for
// orders of frames a real server gives only by chance.

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/req-mtls/req-mtls/internal/testpki"
)

// frameServer accepts HTTP/2 over TLS and hands each connection, its
// preface read, to serve with a framer; the framer's writes go out whole.
func frameServer(t *testing.T, p *testpki.PKI, serve func(n int, fr *http2.Framer)) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, Time: testpki.Clock})
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); conns.Wait() })
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				stop := closeAtEnd(t, c)
				defer stop()
				preface := make([]byte, len(http2.ClientPreface))
				if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
					return
				}
				serve(n, http2.NewFramer(c, c))
			}()
		}
	}()
	return "https://" + ln.Addr().String()
}

// closeAtEnd closes c when the test ends, so that no serve outlives it.
func closeAtEnd(t *testing.T, c net.Conn) func() {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("a test connection lived 10 s")
		}
		c.Close()
	}()
	return func() { close(done) }
}

// An eventLog is what a test server did, in order.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) note(e string) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.events, ", ")
}

// answer sends a 200 response with body on stream id.
func answer(fr *http2.Framer, id uint32, body string) error {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	return fr.WriteData(id, true, []byte(body))
}

// TestStreamErrorKeepsOtherRequests: a stream reset with PROTOCOL_ERROR
// (what Go's server sends to a stream over the limit its SETTINGS gave,
// when the client opened the stream before reading them) while another
// request is in flight on the connection. HTTP/2 takes no new request on
// that connection after it. The reset GET is sent again on a new one, and
// the request in flight (a POST, which nothing would send again) gets its
// answer: the connection used to be closed under it.
func TestStreamErrorKeepsOtherRequests(t *testing.T) {
	p := testpki.New(t)
	postSeen := make(chan struct{})
	release := make(chan struct{})
	var events eventLog
	note := events.note
	url := frameServer(t, p, func(n int, fr *http2.Framer) {
		if n > 0 {
			// Later connections: SETTINGS, then an answer per request.
			note("new connection")
			fr.WriteSettings()
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return
				}
				if h, ok := f.(*http2.HeadersFrame); ok {
					if answer(fr, h.StreamID, "ok") != nil {
						return
					}
				}
			}
		}
		// The first: no SETTINGS until the GET's stream is open.
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.DataFrame:
				if f.StreamID == 1 && f.StreamEnded() {
					close(postSeen)
				}
			case *http2.HeadersFrame:
				if f.StreamID != 3 {
					continue
				}
				if fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1}) != nil ||
					fr.WriteRSTStream(3, http2.ErrCodeProtocol) != nil {
					return
				}
				go func() {
					<-release
					note("POST answered")
					answer(fr, 1, "posted")
				}()
			}
		}
	})
	tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p)}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	posted := make(chan string, 1)
	go func() {
		resp, err := c.Post(url+"/post", "text/plain", strings.NewReader("a body"))
		if err != nil {
			posted <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			posted <- err.Error()
			return
		}
		posted <- string(b)
	}()
	select {
	case <-postSeen:
	case <-time.After(10 * time.Second):
		t.Fatal("the POST did not reach the server")
	}
	got, err := do(c, url+"/get")
	close(release)
	if err != nil || got != "ok" {
		t.Errorf("the GET reset with PROTOCOL_ERROR: %q, %v; want it sent again and answered", got, err)
	}
	if got := <-posted; got != "posted" {
		t.Errorf("the POST in flight when another stream was reset: %q, want its answer", got)
	}
	want := "new connection, POST answered"
	if got := events.String(); got != want {
		t.Errorf("the server saw: %s; want %s", got, want)
	}
}

// TestMaxConnsAwaitsSettings: under MaxConnsPerHost, a second request on a
// new connection waits for the server's SETTINGS (here a limit of one
// stream, sent 50 ms after the first request's stream opened) instead of
// opening a stream the server could reset, and is served on the same
// connection after the first.
func TestMaxConnsAwaitsSettings(t *testing.T) {
	p := testpki.New(t)
	var events eventLog
	note := events.note
	url := frameServer(t, p, func(n int, fr *http2.Framer) {
		note(fmt.Sprintf("connection %d", n))
		var wmu sync.Mutex // the framer's writes, from here and the timer
		var waiting []uint32
		settled := false
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			h, ok := f.(*http2.HeadersFrame)
			if !ok {
				continue
			}
			note(fmt.Sprintf("stream %d", h.StreamID))
			wmu.Lock()
			if h.StreamID == 1 {
				time.AfterFunc(50*time.Millisecond, func() {
					wmu.Lock()
					defer wmu.Unlock()
					note("SETTINGS")
					fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
					settled = true
					for _, id := range waiting {
						answer(fr, id, "ok")
					}
				})
			}
			if settled {
				answer(fr, h.StreamID, "ok")
			} else {
				waiting = append(waiting, h.StreamID)
			}
			wmu.Unlock()
		}
	})
	tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p)}, MaxConnsPerHost: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := do(c, url+"/"); err != nil || got != "ok" {
				t.Errorf("GET: %q, %v", got, err)
			}
		}()
	}
	wg.Wait()
	if got, want := events.String(), "connection 0, stream 1, SETTINGS, stream 3"; got != want {
		t.Errorf("the server saw: %s; want %s", got, want)
	}
}

// TestGoAwayUnprocessedSentAgain: a POST whose stream is above the last
// stream of the server's GOAWAY was not processed (RFC 9113, Section 6.8):
// it is sent again, body and all, on a new connection.
func TestGoAwayUnprocessedSentAgain(t *testing.T) {
	p := testpki.New(t)
	var mu sync.Mutex
	var bodies []string
	url := frameServer(t, p, func(n int, fr *http2.Framer) {
		fr.WriteSettings()
		var body strings.Builder
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.HeadersFrame:
				if n == 0 && fr.WriteGoAway(0, http2.ErrCodeNo, nil) != nil {
					return
				}
			case *http2.DataFrame:
				body.Write(f.Data())
				if f.StreamEnded() && n > 0 {
					mu.Lock()
					bodies = append(bodies, body.String())
					mu.Unlock()
					if answer(fr, f.StreamID, "posted") != nil {
						return
					}
				}
			}
		}
	})
	tr, err := NewTransport(TransportConfig{Config: Config{Time: testpki.Clock, RootCAs: rootPool(p)}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Post(url+"/", "text/plain", strings.NewReader("the body"))
	if err != nil {
		t.Fatalf("POST refused by a GOAWAY below its stream: %v; want it sent again", err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	mu.Lock()
	defer mu.Unlock()
	if string(got) != "posted" || len(bodies) != 1 || bodies[0] != "the body" {
		t.Errorf("answer %q, the server got bodies %q; want posted and one whole body", got, bodies)
	}
}
