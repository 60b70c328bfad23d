package clienthello

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var alertDecode = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32}

// sizedHello returns a ClientHello message of exactly size bytes, padded
// with an unknown extension.
func sizedHello(t testing.TB, size int) []byte {
	t.Helper()
	pad := size - len(buildHello(tls13, ext{0xffce, nil}))
	msg := buildHello(tls13, ext{0xffce, bytes.Repeat([]byte{'a'}, pad)})
	if len(msg) != size {
		t.Fatalf("built a %d-byte hello, want %d", len(msg), size)
	}
	return msg
}

// trailingInput is a ClientHello of helloSize bytes with trailing more bytes
// of handshake data after it in its last record, framed in 16 KiB records.
func trailingInput(t testing.TB, helloSize, trailing int) []byte {
	return records(append(sizedHello(t, helloSize), bytes.Repeat([]byte{'a'}, trailing)...), 1<<14)
}

// seedHello60K names the FuzzConn seed that holds trailingInput(t, 60000, 4000).
const seedHello60K = "testdata/fuzz/FuzzConn/hello60k-trailing4k-records16k"

// TestHeldBound_Hello60KTrailing4K: a 60,000-byte ClientHello with 4,000
// bytes after it in its last record, in 16 KiB records (64,020 bytes in all),
// once kept about 144 KiB while it was reassembled and 80 KiB for the life of
// the connection. Held as read (for the replay) and reassembled, it needs
// more than MaxBuffered: it is refused, and never more than MaxBuffered is
// held on the way.
func TestHeldBound_Hello60KTrailing4K(t *testing.T) {
	in := trailingInput(t, 60000, 4000)
	c, sc, out, err := inspectBytes(in)
	if c.peak > MaxBuffered {
		t.Errorf("held %d bytes at the peak, want at most %d", c.peak, MaxBuffered)
	}
	if h := c.held(); h > MaxBuffered {
		t.Errorf("holds %d bytes after the read, want at most %d", h, MaxBuffered)
	}
	if !errors.Is(err, ErrTooLarge) || !bytes.Equal(sc.written.Bytes(), alertDecode) || len(out) != 0 {
		t.Errorf("err %v, wrote %x, reader saw %d bytes; want ErrTooLarge, a decode_error alert and nothing read", err, sc.written.Bytes(), len(out))
	}
	if h := c.held(); h != 0 {
		t.Errorf("a refused connection holds %d bytes", h)
	}
}

// TestHeldBound_Hello20KTrailing4K: a ClientHello that spans records is
// reassembled in one buffer of exactly its length, and the bytes after it in
// its last record do not grow that buffer.
func TestHeldBound_Hello20KTrailing4K(t *testing.T) {
	in := trailingInput(t, 20000, 4000)
	c, sc, out, err := inspectBytes(in)
	if err != nil || sc.written.Len() != 0 || !bytes.Equal(out, in) {
		t.Fatalf("err %v, wrote %x, replay equal %v", err, sc.written.Bytes(), bytes.Equal(out, in))
	}
	if msg := c.ClientHello(); len(msg) != 20000 || cap(msg) != 20000 {
		t.Errorf("ClientHello() has len %d cap %d, want both 20000", len(msg), cap(msg))
	}
	if c.peak > MaxBuffered {
		t.Errorf("held %d bytes at the peak, want at most %d", c.peak, MaxBuffered)
	}
	if h := c.held(); h != 20000 {
		t.Errorf("holds %d bytes once replayed, want 20000 (the ClientHello alone)", h)
	}
}

// TestSeedHello60K keeps the FuzzConn seed equal to the regression input
// (rewrite it with -update).
func TestSeedHello60K(t *testing.T) {
	want := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\nbyte(%q)\n", trailingInput(t, 60000, 4000), byte(0))
	if *update {
		if err := os.WriteFile(filepath.FromSlash(seedHello60K), want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(filepath.FromSlash(seedHello60K))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the regression input", seedHello60K)
	}
}
