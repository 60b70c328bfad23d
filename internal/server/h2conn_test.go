package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/req-mtls/req-mtls/internal/testpki"
)

// writeCounter counts the writes on the connections it accepts: each is a
// system call.
type writeCounter struct {
	net.Listener
	writes atomic.Int64
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedWrites{Conn: c, n: &l.writes}, nil
}

type countedWrites struct {
	net.Conn
	n *atomic.Int64
}

func (c *countedWrites) Write(p []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(p)
}

// startH2 serves h over HTTP/2 with the server's TLS and returns a client
// for it and the listener counting the server's writes.
func startH2(t testing.TB, h http.Handler) (*http.Client, string, *writeCounter) {
	return startH2Hold(t, 0, h)
}

// startH2Hold is startH2 with a header held for hold, not headerHold.
func startH2Hold(t testing.TB, hold time.Duration, h http.Handler) (*http.Client, string, *writeCounter) {
	return startH2Config(t, Config{Handler: h, headerHold: hold})
}

// startH2Config is startH2 with cfg (its files and clock filled in).
func startH2Config(t testing.TB, cfg Config) (*http.Client, string, *writeCounter) {
	t.Helper()
	p := testpki.New(t)
	cfg.Files, cfg.Now = Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA}, testpki.Clock
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wc := &writeCounter{Listener: ln}
	done := make(chan struct{})
	go func() { s.Serve(wc); close(done) }()
	t.Cleanup(func() {
		s.Shutdown(context.Background())
		<-done
	})
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Time: testpki.Clock}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, "https://" + ln.Addr().String(), wc
}

func get(t *testing.T, cl *http.Client, u string) string {
	t.Helper()
	resp, err := cl.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.ProtoMajor != 2 {
		t.Fatalf("%s: %v", resp.Proto, err)
	}
	return string(b)
}

// TestHTTP2ResponseOneWrite: a response that fits in one write goes out in
// one (its HEADERS and DATA frames together), not one per frame.
func TestHTTP2ResponseOneWrite(t *testing.T) {
	cl, u, wc := startH2(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "6")
		io.WriteString(w, "hello\n")
	}))
	get(t, cl, u) // the handshake and the settings
	time.Sleep(20 * time.Millisecond)
	const n = 50
	before := wc.writes.Load()
	for range n {
		if got := get(t, cl, u); got != "hello\n" {
			t.Fatalf("body %q", got)
		}
	}
	time.Sleep(20 * time.Millisecond)
	if w := wc.writes.Load() - before; w > n+2 {
		t.Errorf("%d responses took %d writes, want one each", n, w)
	}
}

// TestHTTP2HeaderBeforeBody: a response whose header is flushed before its
// body is ready reaches the client while the body waits; the header is
// held only for headerHold.
func TestHTTP2HeaderBeforeBody(t *testing.T) {
	release := make(chan struct{})
	cl, u, _ := startH2(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "data: late\n\n")
	}))
	got := make(chan *http.Response, 1)
	errc := make(chan error, 1)
	go func() {
		resp, err := cl.Get(u)
		if err != nil {
			errc <- err
			return
		}
		got <- resp
	}()
	var resp *http.Response
	select {
	case resp = <-got:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the header never came while the body waited")
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	close(release)
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "data: late\n\n" {
		t.Errorf("body %q, %v", b, err)
	}
}

// TestHTTP2FlushedNotHeld: what a handler flushes reaches the client at
// once, while the handler waits for it: headers flushed (http.Flusher, or
// http.ResponseController), a 103 Early Hints, a 100 Continue asked for by
// the request. The header hold is stretched to an hour: a header held
// never arrives while the handler waits.
func TestHTTP2FlushedNotHeld(t *testing.T) {
	const hour = time.Hour
	arrived := make(chan string, 1) // what the client got, the handler waits for it
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		switch r.URL.Path {
		case "/flusher":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
		case "/controller":
			w.WriteHeader(http.StatusOK)
			if err := http.NewResponseController(w).Flush(); err != nil {
				t.Error(err)
			}
		case "/early-hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
		case "/continue":
			b, err := io.ReadAll(r.Body) // sends 100 Continue first
			if err != nil || string(b) != "body" {
				t.Errorf("request body %q, %v", b, err)
			}
			io.WriteString(w, "read")
			return
		}
		select {
		case got := <-arrived:
			io.WriteString(w, got)
		case <-r.Context().Done():
		}
	})
	for _, path := range []string{"/flusher", "/controller", "/early-hints", "/continue"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			cl, u, _ := startH2Hold(t, hour, h)
			cl.Transport.(*http.Transport).ExpectContinueTimeout = hour              // the body waits for the 100
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // a guard, not a measure
			defer cancel()
			var req *http.Request
			if path == "/continue" {
				req, _ = http.NewRequestWithContext(ctx, "POST", u+path, strings.NewReader("body"))
				req.Header.Set("Expect", "100-continue")
			} else {
				req, _ = http.NewRequestWithContext(ctx, "GET", u+path, nil)
			}
			req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
				Got1xxResponse: func(code int, header textproto.MIMEHeader) error {
					if code == http.StatusEarlyHints {
						arrived <- "103 " + header.Get("Link")
					}
					return nil
				},
			}))
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatalf("%s: %v: the flushed header was held while the handler waited for it", path, err)
			}
			defer resp.Body.Close()
			want := "read"
			switch path {
			case "/flusher", "/controller":
				arrived <- "200 " + resp.Header.Get("Content-Type")
				want = "200 text/event-stream"
			case "/early-hints":
				want = "103 </style.css>; rel=preload"
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != want {
				t.Errorf("%s: body %q (%v), want %q", path, b, err, want)
			}
		})
	}
}

// TestHTTP2ManyStreams: concurrent streams of every shape on one
// connection all get their own header and body.
func TestHTTP2ManyStreams(t *testing.T) {
	cl, u, _ := startH2(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Stream", r.URL.Query().Get("i"))
		switch r.URL.Path {
		case "/big":
			w.Write(bytes.Repeat([]byte(r.URL.Query().Get("i")+","), 20000))
		case "/flushed":
			w.WriteHeader(http.StatusAccepted)
			w.(http.Flusher).Flush()
			time.Sleep(2 * headerHold)
			fmt.Fprint(w, r.URL.Query().Get("i"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			fmt.Fprint(w, r.URL.Query().Get("i"))
		}
	}))
	get(t, cl, u)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := []string{"/small", "/big", "/flushed", "/empty"}[i%4]
			resp, err := cl.Get(fmt.Sprintf("%s%s?i=%d", u, path, i))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			want := fmt.Sprint(i)
			switch path {
			case "/big":
				want = strings.Repeat(want+",", 20000)
			case "/empty":
				want = ""
			}
			if err != nil || string(b) != want || resp.Header.Get("Stream") != fmt.Sprint(i) {
				t.Errorf("%s: %d bytes (%v), Stream %q", path, len(b), err, resp.Header.Get("Stream"))
			}
		}()
	}
	wg.Wait()
}

// frames encodes HTTP/2 frames with x/net's framer.
func frames(t testing.TB, write func(*http2.Framer) error) []byte {
	var b bytes.Buffer
	if err := write(http2.NewFramer(&b, nil)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func headerBlock() []byte {
	var b bytes.Buffer
	e := hpack.NewEncoder(&b)
	e.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	e.WriteField(hpack.HeaderField{Name: "content-length", Value: "6"})
	return b.Bytes()
}

func TestOpensResponses(t *testing.T) {
	hb := headerBlock()
	open := func(id uint32) func(*http2.Framer) error {
		return func(f *http2.Framer) error {
			return f.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb, EndHeaders: true})
		}
	}
	for _, c := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"open HEADERS", frames(t, open(1)), true},
		{"two open HEADERS", append(frames(t, open(1)), frames(t, open(3))...), true},
		{"HEADERS ending the stream", frames(t, func(f *http2.Framer) error {
			return f.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb, EndHeaders: true, EndStream: true})
		}), false},
		{"HEADERS with a CONTINUATION to come", frames(t, func(f *http2.Framer) error {
			return f.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb})
		}), false},
		{"HEADERS then DATA", append(frames(t, open(1)), frames(t, func(f *http2.Framer) error { return f.WriteData(1, true, []byte("hello\n")) })...), false},
		{"DATA", frames(t, func(f *http2.Framer) error { return f.WriteData(1, false, []byte("x")) }), false},
		{"SETTINGS", frames(t, func(f *http2.Framer) error { return f.WriteSettings() }), false},
		{"PING", frames(t, func(f *http2.Framer) error { return f.WritePing(true, [8]byte{}) }), false},
		{"cut short", frames(t, open(1))[:12], false},
		{"a frame header alone", frames(t, open(1))[:9], false},
		{"HEADERS with trailing bytes", append(frames(t, open(1)), 0), false},
		{"stream 0", func() []byte { b := frames(t, open(1)); b[8] = 0; return b }(), false},
		{"empty", nil, false},
	} {
		if got := opensResponses(c.p); got != c.want {
			t.Errorf("%s: opensResponses = %v, want %v", c.name, got, c.want)
		}
	}
}

// FuzzOpensResponses: never a panic, and for what x/net's framer reads as
// whole frames, true exactly when every frame opens a response.
func FuzzOpensResponses(f *testing.F) {
	hb := headerBlock()
	f.Add(frames(f, func(fr *http2.Framer) error {
		return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb, EndHeaders: true})
	}))
	f.Add(frames(f, func(fr *http2.Framer) error { return fr.WriteData(3, true, []byte("body")) }))
	f.Fuzz(func(t *testing.T, p []byte) {
		got := opensResponses(p)
		r := bytes.NewReader(p)
		fr := http2.NewFramer(nil, r)
		fr.SetMaxReadFrameSize(1<<24 - 1)
		want, n := true, 0
		for r.Len() > 0 {
			fm, err := fr.ReadFrame()
			if err != nil {
				return // not frames the server writes
			}
			n++
			h, ok := fm.(*http2.HeadersFrame)
			if !ok || !h.HeadersEnded() || h.StreamEnded() {
				want = false
			}
		}
		if n == 0 {
			want = false
		}
		if got != want {
			t.Errorf("opensResponses(%x) = %v, the framer says %v", p, got, want)
		}
	})
}

// tlsPair returns a headerConn over the server side of a TLS connection on
// loopback and the client side.
func tlsPair(t *testing.T) (*headerConn, *tls.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := handshake(t, sc, cc)
	hc := &headerConn{Conn: srv}
	t.Cleanup(func() { hc.stop(); hc.Close(); cli.Close() })
	return hc, cli
}

// handshake runs a TLS handshake between sc (the server's end, with the
// test PKI's server certificate) and cc.
func handshake(t *testing.T, sc, cc net.Conn) (srv, cli *tls.Conn) {
	t.Helper()
	p := testpki.New(t)
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	srv = tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{cert}})
	cli = tls.Client(cc, &tls.Config{RootCAs: pool, ServerName: "localhost", Time: testpki.Clock})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return srv, cli
}

// TestHeaderConnHoldsAndReleases: a held header goes out with the next
// write, or alone after headerHold, or at Close; bytes and order are kept.
func TestHeaderConnHoldsAndReleases(t *testing.T) {
	hb := headerBlock()
	hdr := frames(t, func(f *http2.Framer) error {
		return f.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb, EndHeaders: true})
	})
	data := frames(t, func(f *http2.Framer) error { return f.WriteData(1, true, []byte("hello\n")) })
	read := func(cli *tls.Conn, n int) []byte {
		t.Helper()
		cli.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, n)
		if _, err := io.ReadFull(cli, b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Run("joined", func(t *testing.T) {
		hc, cli := tlsPair(t)
		for _, p := range [][]byte{hdr, data} {
			if n, err := hc.Write(p); n != len(p) || err != nil {
				t.Fatalf("Write: %d, %v", n, err)
			}
		}
		if got := read(cli, len(hdr)+len(data)); !bytes.Equal(got, append(append([]byte{}, hdr...), data...)) {
			t.Errorf("read %x", got)
		}
	})
	t.Run("alone after the hold", func(t *testing.T) {
		hc, cli := tlsPair(t)
		// The clock read before the write: the hold starts in it, so a
		// held header comes no sooner than headerHold after this.
		start := time.Now()
		hc.Write(hdr)
		if got := read(cli, len(hdr)); !bytes.Equal(got, hdr) {
			t.Errorf("read %x", got)
		}
		if d := time.Since(start); d < headerHold/2 {
			t.Errorf("the header came after %v: it was not held", d)
		}
	})
	t.Run("at close", func(t *testing.T) {
		hc, cli := tlsPair(t)
		hc.Write(hdr)
		hc.Close()
		if got := read(cli, len(hdr)); !bytes.Equal(got, hdr) {
			t.Errorf("read %x", got)
		}
	})
	t.Run("a failed release fails the next write", func(t *testing.T) {
		hc, cli := tlsPair(t)
		hc.Conn.NetConn().Close()
		hc.Write(hdr)
		time.Sleep(5 * headerHold)
		if _, err := hc.Write(data); err == nil {
			t.Error("a write after the connection failed succeeded")
		}
		_ = cli
	})
}

// TestHeaderConnKeepsLittle: once written, a large held header leaves no
// buffer of its size on the idle connection.
func TestHeaderConnKeepsLittle(t *testing.T) {
	var b bytes.Buffer
	e := hpack.NewEncoder(&b)
	e.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	e.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("v", 3000)})
	hdr := frames(t, func(f *http2.Framer) error {
		return f.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b.Bytes(), EndHeaders: true})
	})
	data := frames(t, func(f *http2.Framer) error { return f.WriteData(1, true, []byte("hello\n")) })
	hc, cli := tlsPair(t)
	hc.Write(hdr)
	hc.Write(data)
	cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(cli, make([]byte, len(hdr)+len(data))); err != nil {
		t.Fatal(err)
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if cap(hc.held) > heldKept {
		t.Errorf("the idle connection keeps %d bytes of held buffer", cap(hc.held))
	}
}

// TestHeaderConnCloseStuckPeer: Close with a header held returns even when
// the peer reads nothing (the held frame's write gives up).
func TestHeaderConnCloseStuckPeer(t *testing.T) {
	sc, cc := net.Pipe() // no buffer: a write waits for the peer's read
	srv, cli := handshake(t, sc, cc)
	// The client's session tickets, read now: then it reads nothing more.
	go func() {
		cli.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		cli.Read(make([]byte, 1))
	}()
	time.Sleep(100 * time.Millisecond)
	hc := &headerConn{Conn: srv}
	defer hc.stop()
	hc.Write(frames(t, func(f *http2.Framer) error {
		return f.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: headerBlock(), EndHeaders: true})
	}))
	done := make(chan struct{})
	go func() { hc.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * closeWriteTimeout):
		t.Fatal("Close still blocked on a peer that reads nothing")
	}
	cc.Close()
}

// BenchmarkHTTP2Response: a small response over one HTTP/2 connection, kept
// alive; writes/op counts the server's system calls to send it (one: the
// header joined to its body).
func BenchmarkHTTP2Response(b *testing.B) {
	cl, u, wc := startH2(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "6")
		io.WriteString(w, "hello\n")
	}))
	read := func() {
		resp, err := cl.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	read()
	b.ReportAllocs()
	before := wc.writes.Load()
	n := 0
	for b.Loop() {
		read()
		n++
	}
	b.ReportMetric(float64(wc.writes.Load()-before)/float64(n), "writes/op")
}

// BenchmarkHTTP2FlushedHeader: a handler that flushes its header, then
// waits for the client to have it before it writes its body (a stream).
// A header held for headerHold adds it to every op.
func BenchmarkHTTP2FlushedHeader(b *testing.B) {
	got := make(chan struct{})
	cl, u, _ := startH2(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		select {
		case <-got:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: 1\n\n")
	}))
	read := func() {
		resp, err := cl.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		got <- struct{}{}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	read()
	b.ReportAllocs()
	for b.Loop() {
		read()
	}
}

// TestHTTP2BodyLengthChecked: a request to the server's pages whose DATA
// frames do not add up to its content-length is a stream error,
// PROTOCOL_ERROR (RFC 9113, Section 8.1.1; h2spec 8.1.2.6), not answered
// as if its body were whole: the pages read the body before answering.
func TestHTTP2BodyLengthChecked(t *testing.T) {
	p := testpki.New(t)
	ts := startServer(t, p, Config{})
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	c, err := tls.Dial("tcp", ts.url.Host, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2"}, Time: testpki.Clock})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "localhost"}, {":path", "/"}, {"content-length", "1"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, false, []byte("a"))
	// The rest of the body once the server has read all this (its PING
	// answer comes after): a server that answers without the body has
	// answered by then.
	fr.WritePing(false, [8]byte{1})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no answer on stream 1: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID == 1 {
				t.Fatal("a response to a body that breaks its content-length, want RST_STREAM PROTOCOL_ERROR")
			}
		case *http2.PingFrame:
			if f.IsAck() {
				fr.WriteData(1, true, []byte("b"))
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				if f.ErrCode != http2.ErrCodeProtocol {
					t.Fatalf("RST_STREAM %v, want PROTOCOL_ERROR", f.ErrCode)
				}
				return
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v, want a stream error", f.ErrCode)
		}
	}
}

// BenchmarkHTTP2Upload: a 256 KiB request body, in DATA frames of at most
// what the server announces: x/net's 1 MiB (the server's), or RFC 9113's
// 16 KiB, which would enforce Section 4.2's frame size (h2spec 4.2 case 3)
// at this cost.
func BenchmarkHTTP2Upload(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 256<<10)
	for _, size := range []uint32{16 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("frames=%dKiB", size>>10), func(b *testing.B) {
			cl, u, _ := startH2Config(b, Config{MaxBodyBytes: 1 << 20, readFrameSize: size, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
			})})
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				resp, err := cl.Post(u, "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}
