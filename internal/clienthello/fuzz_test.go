package clienthello

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

func addSeeds(f *testing.F) {
	names, err := filepath.Glob("testdata/*.hex")
	if err != nil || len(names) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, name := range names {
		data := readSeed(f, filepath.Base(name))
		f.Add(data, uint8(0))
		f.Add(data, uint8(1))
		f.Add(data, uint8(97))
	}
	f.Add(records(buildHello(tls13, ext{0xfe01, []byte{1, 0}}), 3), uint8(2))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint8(0))
}

// FuzzConn feeds arbitrary input, in reads of arbitrary size, through
// inspection: no panic, never more than MaxBuffered bytes held, and either
// the input is replayed unchanged or the connection is refused with an alert.
func FuzzConn(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		var chunks []int
		if chunk > 0 {
			chunks = []int{int(chunk)}
		}
		sc := &scriptConn{data: append([]byte(nil), data...), chunks: chunks}
		c := NewConn(sc, nil)
		first := make([]byte, 1)
		n, err := c.Read(first)
		// Everything held at once: record buffer, reassembled message
		// and bytes not yet replayed.
		if c.peak > MaxBuffered || c.held() > MaxBuffered {
			t.Fatalf("held %d bytes at the peak, %d after the first Read; the bound is %d", c.peak, c.held(), MaxBuffered)
		}
		if c.fatal != nil {
			if sc.written.Len() != 7 || !sc.closed {
				t.Fatalf("refused without an alert: wrote %x", sc.written.Bytes())
			}
			return
		}
		var out bytes.Buffer
		out.Write(first[:n])
		buf := make([]byte, 512)
		for err == nil {
			n, err = c.Read(buf)
			out.Write(buf[:n])
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("replayed %x, want %x", out.Bytes(), data)
		}
		if h := c.held(); h != cap(c.msgMem) || h > MaxBuffered {
			t.Fatalf("holds %d bytes once replayed, want only the ClientHello's %d", h, cap(c.msgMem))
		}
		if sc.written.Len() != 0 {
			t.Fatalf("wrote %x on a connection it did not refuse", sc.written.Bytes())
		}
		if c.HelloSeen() && c.Summary() == nil {
			t.Fatal("inspected hello does not summarize")
		}
	})
}

// FuzzRetry feeds arbitrary input, in reads of arbitrary size, as what a
// client sends after a HelloRetryRequest that answered a real first
// ClientHello with flag 80: no panic, never more than MaxBuffered bytes held,
// and either the input is replayed unchanged or the connection is refused
// with an alert; the flags stay those of the first hello.
func FuzzRetry(f *testing.F) {
	first := readSeed(f, "utls-flag80.hex")
	msg := first[recordHeaderLen:]
	flags8, _ := tlsflags.Must(8).ExtensionData()
	flag80, _ := tlsflags.Must(80).ExtensionData()
	for _, seed := range [][]byte{
		append(append([]byte{}, ccsRecord...), records(msg, 1<<14)...),
		records(msg, 7),
		append(append([]byte{}, ccsRecord...), records(rewriteFlags(f, msg, 0xfe01, flags8), 1<<14)...),
		records(rewriteFlags(f, msg, 0xfe01, []byte{2, 1, 0}), 1<<14),
		records(rewriteFlags(f, msg, 0, nil), 1<<14),
		records(rewriteFlags(f, msg, 62, flag80), 1<<14),
		trailingInput(f, 20000, 4000),
		{recordTypeChangeCipherSpec, 3, 3, 0, 1, 2},
		{recordTypeAlert, 3, 3, 0, 2, 2, 40},
	} {
		f.Add(seed, uint8(0))
		f.Add(seed, uint8(1))
		f.Add(seed, uint8(97))
	}
	hrr := hrrRecord(make([]byte, 32))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		var chunks []int
		if chunk > 0 {
			chunks = []int{int(chunk)}
		}
		sc := &scriptConn{data: append(append([]byte{}, first...), data...), chunks: chunks}
		c := NewConn(sc, nil)
		got := make([]byte, len(first))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, first) {
			t.Fatalf("first hello: %v, replayed unchanged %v", err, bytes.Equal(got, first))
		}
		if _, err := c.Write(hrr); err != nil || c.watch.Load() != watchRetry {
			t.Fatalf("HelloRetryRequest written (%v) but not seen", err)
		}
		var out bytes.Buffer
		buf := make([]byte, 512)
		var err error
		for err == nil {
			var n int
			n, err = c.Read(buf)
			out.Write(buf[:n])
		}
		if c.peak > MaxBuffered || c.held() > MaxBuffered {
			t.Fatalf("held %d bytes at the peak, %d after; the bound is %d", c.peak, c.held(), MaxBuffered)
		}
		if c.Flags() != tlsflags.Must(80) {
			t.Fatalf("flags %v, want the first hello's [80]", c.Flags())
		}
		if c.fatal != nil {
			var fe *FlagsError
			if !errors.As(c.fatal, &fe) && c.fatal != ErrTooLarge {
				t.Fatalf("refused with %v", c.fatal)
			}
			if !bytes.HasPrefix(sc.written.Bytes(), hrr) || sc.written.Len() != len(hrr)+7 || !sc.closed || c.retried {
				t.Fatalf("refused without an alert: wrote %x", sc.written.Bytes())
			}
			return
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("replayed %x, want %x", out.Bytes(), data)
		}
		if !bytes.Equal(sc.written.Bytes(), hrr) {
			t.Fatalf("wrote %x on a connection it did not refuse", sc.written.Bytes()[len(hrr):])
		}
		if h := c.held(); h != cap(c.msgMem) {
			t.Fatalf("holds %d bytes once replayed, want only the first ClientHello's %d", h, cap(c.msgMem))
		}
	})
}

// FuzzSummarize checks that Summarize never panics, that the full parser
// agrees with inspection (what inspection accepts, Summarize accepts with
// the same flags), and that a summary's names and JA4 are well formed: every
// codepoint has a non-empty name, and JA4 has the specification's shape and
// is JA4_r hashed.
func FuzzSummarize(f *testing.F) {
	addSeeds(f)
	for _, name := range []string{"ja4/curl-8.6.0-macos.hex", "ja4/openssl-psk.hex"} {
		f.Add(readSeed(f, name), uint8(0))
	}
	f.Fuzz(func(t *testing.T, data []byte, _ uint8) {
		// Use the stream's first record payload as a message, or the
		// input itself.
		msg := data
		if len(data) > 5 && data[0] == recordTypeHandshake {
			msg = data[5:]
		}
		s, serr := Summarize(msg)
		h, err := parseHello(msg)
		if err != nil {
			if serr == nil {
				t.Fatalf("summarized a hello that does not parse: %v", err)
			}
			return
		}
		fi, ferr := inspectFlags(h)
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("inspect err %v, summarize err %v", ferr, serr)
		}
		if serr != nil {
			return
		}
		if s.Flags != fi.flags || s.FlagsCodepoint != fi.codepoint {
			t.Fatalf("flags disagree: %v/%x vs %v/%x", s.Flags, s.FlagsCodepoint, fi.flags, fi.codepoint)
		}
		checkSummary(t, s)
	})
}

// BenchmarkInspect measures the whole per-connection inspection of a 1.5 KB
// ClientHello with flag 80: wrapping, buffering, parsing, and replaying it.
func BenchmarkInspect(b *testing.B) {
	benchInspect(b, readSeed(b, "utls-flag80.hex"), nil)
}

// BenchmarkInspectFragmented is the same hello in records of 100 bytes,
// delivered in 50-byte reads.
func BenchmarkInspectFragmented(b *testing.B) {
	benchInspect(b, records(readSeed(b, "utls-flag80.hex")[5:], 100), []int{50})
}

func benchInspect(b *testing.B, data []byte, chunks []int) {
	sc := &scriptConn{chunks: chunks}
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		sc.data = data
		c := NewConn(sc, nil)
		for n := 0; n < len(data); {
			m, err := c.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
		if !c.Flags().Has(80) {
			b.Fatal("flag 80 not seen")
		}
	}
}

func BenchmarkSummarize(b *testing.B) {
	msg := readSeed(b, "utls-flag80.hex")[5:]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Summarize(msg); err != nil {
			b.Fatal(err)
		}
	}
}
