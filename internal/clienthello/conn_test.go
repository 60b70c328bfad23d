package clienthello

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/tlsclient"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

var update = flag.Bool("update", false, "rewrite the captured ClientHellos in testdata")

var alertIllegal = []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x2f}

// inspectBytes runs inspection over data delivered in chunks and returns the
// Conn, what Read handed on, and the final Read error.
func inspectBytes(data []byte, chunks ...int) (*Conn, *scriptConn, []byte, error) {
	sc := &scriptConn{data: append([]byte(nil), data...), chunks: chunks}
	c := NewConn(sc, nil)
	var out bytes.Buffer
	buf := make([]byte, 300)
	for {
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return c, sc, out.Bytes(), err
		}
	}
}

func TestFlagsFromRecords(t *testing.T) {
	flag80, _ := tlsflags.Must(80).ExtensionData()
	flags3, _ := tlsflags.Must(8, 12, 170).ExtensionData()
	for _, tc := range []struct {
		name      string
		exts      []ext
		want      tlsflags.Set
		codepoint uint16
	}{
		{"Flag80", []ext{tls13, {0xfe01, flag80}}, tlsflags.Must(80), 0xfe01},
		{"Flags_8_12_170", []ext{{0xfe01, flags3}, tls13}, tlsflags.Must(8, 12, 170), 0xfe01},
		{"BoringSSLCodepoint", []ext{tls13, {62, flag80}}, tlsflags.Must(80), 62},
		{"BothCodepoints", []ext{tls13, {62, flags3}, {0xfe01, flag80}}, tlsflags.Must(8, 12, 80, 170), 0xfe01},
		{"NoFlags", []ext{tls13}, tlsflags.Set{}, 0},
		{"TLS12Only_FlagsIgnored", []ext{{0xfe01, flag80}}, tlsflags.Set{}, 0},
		{"TLS12Only_MalformedIgnored", []ext{{0xfe01, []byte{1, 0}}}, tlsflags.Set{}, 0},
		// An odd byte in supported_versions once made inspection loop
		// forever (found by FuzzConn).
		{"OddSupportedVersions", []ext{{extSupportedVersions, []byte{3, 0x03, 0x04, 0x03}}, {0xfe01, flag80}}, tlsflags.Must(80), 0xfe01},
	} {
		msg := buildHello(tc.exts...)
		for _, framing := range []struct {
			name   string
			record int
			chunks []int
		}{
			{"OneRecord", 1 << 14, nil},
			{"OneByteRecords", 1, []int{1}},
			{"ThreeRecords", len(msg)/3 + 1, []int{7, 1, 300}},
		} {
			t.Run(tc.name+"/"+framing.name, func(t *testing.T) {
				stream := append(records(msg, framing.record), "after"...)
				c, sc, out, err := inspectBytes(stream, framing.chunks...)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out, stream) {
					t.Fatalf("replayed bytes differ from the input")
				}
				if sc.written.Len() != 0 {
					t.Fatalf("wrote %x", sc.written.Bytes())
				}
				if c.Flags() != tc.want || c.FlagsCodepoint() != tc.codepoint {
					t.Errorf("flags %v via %#x, want %v via %#x", c.Flags(), c.FlagsCodepoint(), tc.want, tc.codepoint)
				}
				if !bytes.Equal(c.ClientHello(), msg) {
					t.Errorf("ClientHello() = %x, want %x", c.ClientHello(), msg)
				}
			})
		}
	}
}

// TestMalformedFlagsAlert covers every malformed form of the extension: each
// gets illegal_parameter from the Conn, and the reader sees none of it.
func TestMalformedFlagsAlert(t *testing.T) {
	flag80, _ := tlsflags.Must(80).ExtensionData()
	for _, tc := range []struct {
		name string
		exts []ext
	}{
		{"EmptyExtensionData", []ext{tls13, {0xfe01, nil}}},
		{"EmptyVector", []ext{tls13, {0xfe01, []byte{0}}}},
		{"AllZero", []ext{tls13, {0xfe01, []byte{2, 0, 0}}}},
		{"TrailingZeroByte", []ext{tls13, {0xfe01, []byte{2, 1, 0}}}},
		{"LengthTooLong", []ext{tls13, {0xfe01, []byte{3, 1, 1}}}},
		{"LengthTooShort", []ext{tls13, {0xfe01, []byte{1, 1, 1}}}},
		{"Duplicate", []ext{tls13, {0xfe01, flag80}, {0xfe01, flag80}}},
		{"DuplicateBoringSSL", []ext{tls13, {62, flag80}, {62, flag80}}},
		{"MalformedBoringSSL", []ext{tls13, {62, []byte{1, 0}}}},
		{"MalformedBesideValid", []ext{tls13, {62, flag80}, {0xfe01, []byte{0}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, sc, out, err := inspectBytes(records(buildHello(tc.exts...), 1<<14))
			var fe *FlagsError
			if !errors.As(err, &fe) {
				t.Fatalf("Read error = %v, want *FlagsError", err)
			}
			if len(out) != 0 {
				t.Errorf("reader saw %d bytes", len(out))
			}
			if !bytes.Equal(sc.written.Bytes(), alertIllegal) {
				t.Errorf("wrote %x, want %x", sc.written.Bytes(), alertIllegal)
			}
			if !sc.closed {
				t.Error("connection left open")
			}
			if _, err2 := c.Read(make([]byte, 10)); err2 == nil {
				t.Error("second Read succeeded")
			}
		})
	}
}

// TestPassThrough: input that is not a well-formed ClientHello reaches the
// reader unchanged and nothing is written back.
func TestPassThrough(t *testing.T) {
	for _, tc := range []struct{ name, hex string }{
		{"PlainHTTP", hex.EncodeToString([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))},
		{"AlertRecord", "15030300020228"},
		{"SSL2Hello", "802e0100020015"},
		{"ZeroLengthRecord", "1603010000"},
		{"OversizedRecord", "1603014001" + strings.Repeat("00", 40)},
		{"NotClientHello", "160301000402000000"},
		{"TruncatedBody", "1603010008010000040303"},
		{"ShortRead", "1603"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, _ := hex.DecodeString(tc.hex)
			c, sc, out, err := inspectBytes(in, 1)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, in) || sc.written.Len() != 0 || c.HelloSeen() {
				t.Fatalf("out %x written %x seen %v", out, sc.written.Bytes(), c.HelloSeen())
			}
		})
	}
	// A ClientHello whose body does not parse is crypto/tls's to reject.
	bad := buildHello(tls13)
	bad = bad[:len(bad)-1]
	bad[3]-- // keep the message length consistent with the cut
	in := records(bad, 100)
	c, sc, out, err := inspectBytes(in)
	if err != nil || !bytes.Equal(out, in) || sc.written.Len() != 0 || c.HelloSeen() {
		t.Fatalf("malformed body: err %v, seen %v, wrote %x", err, c.HelloSeen(), sc.written.Bytes())
	}
}

func TestTooLarge(t *testing.T) {
	// A ClientHello announcing 16 MB is refused on its header.
	c, sc, _, err := inspectBytes([]byte{0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff})
	if !errors.Is(err, ErrTooLarge) || !bytes.Equal(sc.written.Bytes(), alertDecode) || !sc.closed {
		t.Fatalf("16 MB hello: err %v, wrote %x", err, sc.written.Bytes())
	}
	_ = c
	// A 40 KB hello in 1-byte records needs 240 KB: over the bound.
	msg := buildHello(tls13, ext{0xffce, make([]byte, 40<<10)})
	_, sc, _, err = inspectBytes(records(msg, 1), 4096)
	if !errors.Is(err, ErrTooLarge) || !bytes.Equal(sc.written.Bytes(), alertDecode) {
		t.Fatalf("fragmented 40 KB hello: err %v, wrote %x", err, sc.written.Bytes())
	}
	// In 16 KiB records it needs 40 KB as read and 40 KB reassembled: over
	// the bound too.
	_, sc, _, err = inspectBytes(records(msg, 1<<14))
	if !errors.Is(err, ErrTooLarge) || !bytes.Equal(sc.written.Bytes(), alertDecode) {
		t.Fatalf("40 KB hello in 16 KiB records: err %v, wrote %x", err, sc.written.Bytes())
	}
	// A 30 KB hello in 16 KiB records fits and is inspected.
	c, _, _, err = inspectBytes(records(sizedHello(t, 30000), 1<<14))
	if err != nil || !c.HelloSeen() || c.peak > MaxBuffered {
		t.Fatalf("30 KB hello in 16 KiB records: err %v, seen %v, held %d", err, c.HelloSeen(), c.peak)
	}
}

// testPKI is a CA with a server certificate for 127.0.0.1, made per test.
func testPKI(t testing.TB) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	// Relative to the moment the test runs: the handshakes check the wall
	// clock.
	nb := time.Now().AddDate(0, -1, 0)
	ca, err := certs.NewCA(pkix.Name{CommonName: "test root"}, nil, nil, nb, nb.AddDate(10, 0, 0))
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(certs.Leaf{Hosts: []string{"127.0.0.1"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: nb, NotAfter: nb.AddDate(1, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool, certs.TLS(cert, key)
}

// fragmentingConn rewrites the client's first flight of handshake records
// as 1-byte records, each in its own Write.
type fragmentingConn struct {
	net.Conn
	done bool
}

func (c *fragmentingConn) Write(p []byte) (int, error) {
	if c.done || len(p) < 5 || p[0] != recordTypeHandshake {
		return c.Conn.Write(p)
	}
	c.done = true
	for rest := p; len(rest) >= 5; {
		n := int(rest[3])<<8 | int(rest[4])
		for _, b := range rest[5 : 5+n] {
			if _, err := c.Conn.Write([]byte{recordTypeHandshake, rest[1], rest[2], 0, 1, b}); err != nil {
				return 0, err
			}
		}
		rest = rest[5+n:]
	}
	return len(p), nil
}

// TestLoopbackOneByteRecords: a stock crypto/tls server behind the Listener
// reads flag 80 from a ClientHello sent as 1-byte records in 1-byte writes,
// and the handshake completes (so the bytes were replayed unchanged: the
// transcript hashes agree).
func TestLoopbackOneByteRecords(t *testing.T) {
	pool, serverCert := testPKI(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		flags tlsflags.Set
		state tls.ConnectionState
		err   error
	}
	result := make(chan seen, 1)
	go func() {
		c, err := NewListener(inner).Accept()
		if err != nil {
			result <- seen{err: err}
			return
		}
		defer c.Close()
		var flags tlsflags.Set
		srv := tls.Server(c, &tls.Config{
			GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
				flags = chi.Conn.(*Conn).Flags()
				return nil, nil
			},
			Certificates: []tls.Certificate{serverCert},
		})
		c.SetDeadline(time.Now().Add(20 * time.Second))
		err = srv.Handshake()
		if err == nil {
			_, err = srv.Write([]byte("ok"))
		}
		result <- seen{flags, srv.ConnectionState(), err}
	}()
	raw, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	hello := tlsclient.Hello{Flags: tlsflags.Must(tlsflags.RequestMTLS)}
	uc, err := hello.Client(&fragmentingConn{Conn: raw}, &utls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := uc.HandshakeContext(context.Background()); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(uc, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("read %q, %v", buf, err)
	}
	s := <-result
	if s.err != nil {
		t.Fatalf("server: %v", s.err)
	}
	if s.flags != tlsflags.Must(80) || s.state.Version != tls.VersionTLS13 {
		t.Errorf("server saw flags %v over %x", s.flags, s.state.Version)
	}
	inner.Close()
}

// TestPlainHTTPAnswer: net/http still answers plain HTTP on the TLS port.
func TestPlainHTTPAnswer(t *testing.T) {
	_, serverCert := testPKI(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{serverCert}},
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	go srv.ServeTLS(NewListener(inner), "", "")
	defer srv.Close()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.0 400") {
		t.Fatalf("got %q, %v", line, err)
	}
}

// TestStallCutByDeadline: a client that sends half a record and stalls is
// cut off by the reader's deadline, and a timeout error comes back.
func TestStallCutByDeadline(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.Write([]byte{0x16, 3, 1, 0, 200, 1, 0})
	c, err := NewListener(inner).Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := c.Read(make([]byte, 64))
	if n != 7 || err != nil {
		t.Fatalf("first Read = %d, %v; want the 7 buffered bytes", n, err)
	}
	_, err = c.Read(make([]byte, 64))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read error = %v, want a timeout", err)
	}
}

func TestSummary(t *testing.T) {
	for _, name := range []string{"utls-flag80.hex", "crypto-tls.hex"} {
		t.Run(name, func(t *testing.T) {
			c, _, _, err := inspectBytes(readSeed(t, name))
			if err != nil || !c.HelloSeen() {
				t.Fatalf("err %v, seen %v", err, c.HelloSeen())
			}
			s := c.Summary()
			if s.ServerName != "example.com" {
				t.Errorf("SNI %q", s.ServerName)
			}
			if len(s.Versions) == 0 || s.Versions[0] != 0x0304 {
				t.Errorf("versions %x", s.Versions)
			}
			if strings.Join(s.ALPN, ",") != "h2,http/1.1" {
				t.Errorf("ALPN %q", s.ALPN)
			}
			if len(s.CipherSuites) == 0 || len(s.Groups) == 0 || len(s.SignatureAlgorithms) == 0 || len(s.KeyShares) == 0 {
				t.Errorf("empty lists in %+v", s)
			}
			wantFlags := tlsflags.Set{}
			if strings.Contains(name, "flag80") {
				wantFlags = tlsflags.Must(80)
				if i := indexOf(s.Extensions, 0xfe01); i < 0 || s.Extensions[i-1] != extSupportedVersions || s.Extensions[i+1] != extKeyShare {
					t.Errorf("tls_flags not between supported_versions and key_share: %v", s.Extensions)
				}
			}
			if s.Flags != wantFlags {
				t.Errorf("flags %v, want %v", s.Flags, wantFlags)
			}
		})
	}
}

func indexOf(list []uint16, v uint16) int {
	for i, x := range list {
		if x == v {
			return i
		}
	}
	return -1
}

// TestCaptureSeeds captures real ClientHellos (uTLS with our extension, and
// stock crypto/tls) into testdata with -update, and otherwise checks that the
// stored ones still parse.
func TestCaptureSeeds(t *testing.T) {
	if !*update {
		for _, name := range []string{"utls-flag80.hex", "utls-flags-8-12-170.hex", "utls-codepoint62.hex", "utls-noflags.hex", "crypto-tls.hex"} {
			c, _, _, err := inspectBytes(readSeed(t, name))
			if err != nil || !c.HelloSeen() {
				t.Errorf("%s: err %v, seen %v", name, err, c.HelloSeen())
			}
		}
		return
	}
	capture := func(name string, dial func(net.Conn)) {
		a, b := net.Pipe()
		go func() { dial(a); a.Close() }()
		c := NewConn(b, nil)
		c.Read(make([]byte, 1))
		b.Close()
		msg := c.ClientHello()
		if msg == nil {
			t.Fatalf("%s: no ClientHello", name)
		}
		if err := os.WriteFile(filepath.Join("testdata", name), []byte(hex.EncodeToString(records(msg, 1<<14))+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ucfg := &utls.Config{ServerName: "example.com"}
	for name, h := range map[string]tlsclient.Hello{
		"utls-flag80.hex":         {Flags: tlsflags.Must(80)},
		"utls-flags-8-12-170.hex": {Flags: tlsflags.Must(8, 12, 170)},
		"utls-codepoint62.hex":    {Flags: tlsflags.Must(80), Codepoint: 62},
		"utls-noflags.hex":        {},
	} {
		h.NextProtos = []string{"h2", "http/1.1"}
		capture(name, func(c net.Conn) {
			uc, err := h.Client(c, ucfg)
			if err != nil {
				t.Error(err)
				return
			}
			uc.Handshake()
		})
	}
	capture("crypto-tls.hex", func(c net.Conn) {
		tls.Client(c, &tls.Config{ServerName: "example.com", NextProtos: []string{"h2", "http/1.1"}}).Handshake()
	})
}

// TestBudget: the record buffer and a hello reassembled from several
// records both count against the Budget; past it the hello is refused
// with internal_error, and what a Conn took is given back when done.
func TestBudget(t *testing.T) {
	alertInternal := []byte{21, 3, 3, 0, 2, 2, 80}
	for _, tc := range []struct {
		name   string
		budget int64
		data   []byte
		busy   bool
	}{
		// A 30 KB hello in 16 KiB records: about 30 KB of records, and
		// 30 KB again reassembled.
		{"SpanningFits", 70000, records(sizedHello(t, 30000), 1<<14), false},
		{"SpanningReassemblyOver", 40000, records(sizedHello(t, 30000), 1<<14), true},
		{"OneRecordOver", 1000, records(sizedHello(t, 3000), 1<<14), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBudget(tc.budget)
			sc := &scriptConn{data: append([]byte(nil), tc.data...)}
			c := NewConn(sc, b)
			_, err := io.ReadAll(c)
			if busy := errors.Is(err, ErrBusy); busy != tc.busy {
				t.Fatalf("err %v, want busy %t", err, tc.busy)
			}
			if tc.busy && !bytes.Equal(sc.written.Bytes(), alertInternal) {
				t.Errorf("wrote %x, want the internal_error alert", sc.written.Bytes())
			}
			if !tc.busy && (!c.HelloSeen() || b.Used() == 0 && c.peak == 0) {
				t.Errorf("hello seen %t, budget used %d", c.HelloSeen(), b.Used())
			}
			c.Close()
			if b.Used() != 0 {
				t.Errorf("%d bytes still taken after Close", b.Used())
			}
		})
	}
}
