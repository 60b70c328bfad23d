package clienthello

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	utls "github.com/refraction-networking/utls"
	"golang.org/x/crypto/cryptobyte"

	"github.com/req-mtls/req-mtls/internal/tlsclient"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// ccsRecord is the change_cipher_spec record of middlebox compatibility
// mode (RFC 8446, Appendix D.4).
var ccsRecord = []byte{recordTypeChangeCipherSpec, 3, 3, 0, 1, 1}

// helloFields splits a ClientHello message into its session ID and its
// extensions, in order.
func helloFields(t testing.TB, msg []byte) (sessionID []byte, exts []ext) {
	t.Helper()
	h, err := parseHello(msg)
	if err != nil {
		t.Fatal(err)
	}
	s := cryptobyte.String(msg[4+2+32:])
	var sid cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&sid) {
		t.Fatal("no session ID")
	}
	h.each(func(id uint16, data cryptobyte.String) { exts = append(exts, ext{id, data}) })
	return sid, exts
}

// rewriteFlags returns msg with its tls_flags extensions (under either
// codepoint) replaced by one under cp with data, where the first of them
// was, or at the end; with data nil, they are only removed.
func rewriteFlags(t testing.TB, msg []byte, cp uint16, data []byte) []byte {
	t.Helper()
	_, exts := helloFields(t, msg)
	var b cryptobyte.Builder
	b.AddUint8(typeClientHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		// Everything up to the extensions as it was.
		h, _ := parseHello(msg)
		b.AddBytes(msg[4 : len(msg)-len(h.extensions)-2])
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			put := data != nil
			for _, e := range exts {
				if e.id == tlsflags.CodepointExperimental || e.id == tlsflags.CodepointBoringSSL {
					if !put {
						continue
					}
					e, put = ext{cp, data}, false
				}
				b.AddUint16(e.id)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.data) })
			}
			if put {
				b.AddUint16(cp)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(data) })
			}
		})
	})
	return b.BytesOrPanic()
}

// hrrRecord is a HelloRetryRequest for TLS_AES_128_GCM_SHA256 asking for a
// P-256 key share (RFC 8446, Sections 4.1.3 and 4.1.4), in one record.
func hrrRecord(sessionID []byte) []byte {
	var b cryptobyte.Builder
	b.AddUint8(recordTypeHandshake)
	b.AddUint16(0x0303)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(typeServerHello)
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(0x0303)
			b.AddBytes(helloRetryRequestRandom)
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(sessionID) })
			b.AddUint16(0x1301)
			b.AddUint8(0)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				b.AddUint16(extSupportedVersions)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(versionTLS13) })
				b.AddUint16(extKeyShare)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(uint16(tls.CurveP256)) })
			})
		})
	})
	return b.BytesOrPanic()
}

// serverHelloRecord is hrrRecord with the last byte of the random changed:
// a plain ServerHello as far as the scan is concerned.
func serverHelloRecord(sessionID []byte) []byte {
	rec := hrrRecord(sessionID)
	rec[recordHeaderLen+serverHelloHead-1] ^= 0xff
	return rec
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	deadline := time.Now().Add(10 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	return client, server
}

// TestServerHelloScan: feed tells a HelloRetryRequest from the server's
// first writes however they are cut, and stops at anything else.
func TestServerHelloScan(t *testing.T) {
	hrr := hrrRecord(make([]byte, 32))
	sh := serverHelloRecord(make([]byte, 32))
	alert := []byte{recordTypeAlert, 3, 3, 0, 2, 2, 40}
	// The HelloRetryRequest's message split over two records.
	msg := hrr[recordHeaderLen:]
	split := append(records(msg[:10], 10), records(msg[10:], len(msg))...)
	var bytewise [][]byte
	for i := range hrr {
		bytewise = append(bytewise, hrr[i:i+1])
	}
	head := recordHeaderLen + serverHelloHead // bytes up to the end of the random
	for _, tc := range []struct {
		name   string
		writes [][]byte // every write but the last must leave feed wanting more
		want   int      // feed's result after the last write
	}{
		{"HRR", [][]byte{hrr}, scanRetry},
		{"HRRWithCCS", [][]byte{append(append([]byte{}, hrr...), ccsRecord...)}, scanRetry},
		{"HRRByteByByte", bytewise[:head], scanRetry},
		{"HRRHeaderOnly", [][]byte{hrr[:recordHeaderLen]}, scanMore},
		{"HRRAllButLastByteOfRandom", [][]byte{hrr[:head-1]}, scanMore},
		{"HRRTwoWrites", [][]byte{hrr[:20], hrr[20:]}, scanRetry},
		{"HRRInTwoRecords", [][]byte{split[:12], split[12:]}, scanRetry},
		{"ServerHello", [][]byte{sh}, scanOther},
		{"ServerHelloByteByByte", [][]byte{sh[:head-1], sh[head-1 : head]}, scanOther},
		{"AlertFirst", [][]byte{alert}, scanOther},
		{"NotServerHello", [][]byte{records(buildHello(tls13), 1<<14)}, scanOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s serverHelloScan
			for i, w := range tc.writes {
				want := scanMore
				if i == len(tc.writes)-1 {
					want = tc.want
				}
				if got := s.feed(w); got != want {
					t.Fatalf("write %d of %d: feed = %d, want %d", i+1, len(tc.writes), got, want)
				}
			}
		})
	}
}

// TestHelloRetry runs a Conn through a HelloRetryRequest: the peer sends a
// real first ClientHello with flag 80, the test writes a HelloRetryRequest
// through the Conn, and the peer answers with a second ClientHello. One
// with the same flags is replayed unchanged; one whose flags are changed,
// malformed, dropped or moved to another codepoint is refused with
// illegal_parameter.
func TestHelloRetry(t *testing.T) {
	first := readSeed(t, "utls-flag80.hex")
	msg := first[recordHeaderLen:]
	sid, _ := helloFields(t, msg)
	flag80, _ := tlsflags.Must(80).ExtensionData()
	flags8, _ := tlsflags.Must(8).ExtensionData()
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name   string
		second []byte
		reason string // of the *FlagsError; "" for a hello that passes
	}{
		{"SameFlags", cat(ccsRecord, records(msg, 1<<14)), ""},
		{"SameFlags_NoCCS", records(msg, 1<<14), ""},
		{"SameFlags_TwoCCS", cat(ccsRecord, ccsRecord, records(msg, 1<<14)), ""},
		{"SameFlags_OneByteRecords", cat(ccsRecord, records(msg, 1)), ""},
		{"DifferentFlags", cat(ccsRecord, records(rewriteFlags(t, msg, 0xfe01, flags8), 1<<14)), "changed in the ClientHello after HelloRetryRequest"},
		{"DifferentFlags_OneByteRecords", cat(ccsRecord, records(rewriteFlags(t, msg, 0xfe01, flags8), 1)), "changed in the ClientHello after HelloRetryRequest"},
		{"MalformedFlags", cat(ccsRecord, records(rewriteFlags(t, msg, 0xfe01, []byte{1, 0}), 1<<14)), "not a minimal flag vector"},
		{"FlagsDropped", cat(ccsRecord, records(rewriteFlags(t, msg, 0, nil), 1<<14)), "left out of the ClientHello after HelloRetryRequest"},
		{"CodepointChanged", cat(ccsRecord, records(rewriteFlags(t, msg, 62, flag80), 1<<14)), "left out of the ClientHello after HelloRetryRequest"},
	} {
		for _, write := range []struct {
			name  string
			write func(c *Conn, hrr []byte) error
		}{
			{"OneWrite", func(c *Conn, hrr []byte) error {
				_, err := c.Write(hrr)
				return err
			}},
			{"ByteWrites", func(c *Conn, hrr []byte) error {
				for i := range hrr {
					if _, err := c.Write(hrr[i : i+1]); err != nil {
						return err
					}
				}
				return nil
			}},
			{"WithCCS", func(c *Conn, hrr []byte) error {
				_, err := c.Write(cat(hrr, ccsRecord))
				return err
			}},
		} {
			t.Run(tc.name+"/"+write.name, func(t *testing.T) {
				peer, raw := tcpPair(t)
				c := NewConn(raw, nil)
				if _, err := peer.Write(first); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(first))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, first) {
					t.Fatalf("first hello: read %v, equal %v", err, bytes.Equal(got, first))
				}
				if c.Flags() != tlsflags.Must(80) {
					t.Fatalf("first hello: flags %v", c.Flags())
				}
				hrr := hrrRecord(sid)
				if err := write.write(c, hrr); err != nil {
					t.Fatal(err)
				}
				got = make([]byte, len(hrr))
				if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, hrr) {
					t.Fatalf("peer read the HelloRetryRequest: %v, %x", err, got)
				}
				if _, err := peer.Write(tc.second); err != nil {
					t.Fatal(err)
				}
				got = make([]byte, len(tc.second))
				_, err := io.ReadFull(c, got)
				if tc.reason == "" {
					if err != nil || !bytes.Equal(got, tc.second) {
						t.Fatalf("second hello: read %v, replayed unchanged %v", err, bytes.Equal(got, tc.second))
					}
					if !c.retried {
						t.Error("second hello not inspected")
					}
				} else {
					var fe *FlagsError
					if !errors.As(err, &fe) || fe.Reason != tc.reason {
						t.Fatalf("second hello: Read error %v, want a *FlagsError %q", err, tc.reason)
					}
					// After the HelloRetryRequest (and the CCS of WithCCS)
					// the peer reads the alert, then the end.
					rest, _ := io.ReadAll(peer)
					if write.name == "WithCCS" {
						rest = bytes.TrimPrefix(rest, ccsRecord)
					}
					if !bytes.Equal(rest, alertIllegal) {
						t.Errorf("peer read %x, want %x", rest, alertIllegal)
					}
					if c.retried {
						t.Error("refused hello reported as agreed")
					}
				}
				if c.Flags() != tlsflags.Must(80) || c.FlagsCodepoint() != tlsflags.CodepointExperimental {
					t.Errorf("flags %v via %#x after the second hello, want the first's [80] via 0xfe01", c.Flags(), c.FlagsCodepoint())
				}
				if c.peak > MaxBuffered || c.held() > MaxBuffered {
					t.Errorf("held %d bytes at the peak, %d after", c.peak, c.held())
				}
			})
		}
	}
}

// TestHelloRetryNotInspected: a hello sent after a ServerHello that is not a
// HelloRetryRequest, or after the reader asked for more than the first
// hello before the server answered, is not inspected: it passes unchanged.
func TestHelloRetryNotInspected(t *testing.T) {
	first := readSeed(t, "utls-flag80.hex")
	sid, _ := helloFields(t, first[recordHeaderLen:])
	second := records(rewriteFlags(t, first[recordHeaderLen:], 0, nil), 1<<14)
	t.Run("AfterServerHello", func(t *testing.T) {
		peer, raw := tcpPair(t)
		c := NewConn(raw, nil)
		peer.Write(first)
		if _, err := io.ReadFull(c, make([]byte, len(first))); err != nil {
			t.Fatal(err)
		}
		c.Write(serverHelloRecord(sid))
		if st := c.watch.Load(); st != watchOff {
			t.Fatalf("still watching writes (%d) after a ServerHello", st)
		}
		peer.Write(second)
		got := make([]byte, len(second))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, second) || c.retried {
			t.Fatalf("read %v, unchanged %v, inspected %v", err, bytes.Equal(got, second), c.retried)
		}
	})
	t.Run("ReaderAheadOfServer", func(t *testing.T) {
		// Both hellos at once, read through before the HelloRetryRequest.
		in := append(append([]byte{}, first...), second...)
		c, sc, out, err := inspectBytes(in)
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("read %v, unchanged %v", err, bytes.Equal(out, in))
		}
		c.Write(hrrRecord(sid))
		if c.watch.Load() != watchOff || c.retried || !bytes.Equal(sc.written.Bytes(), hrrRecord(sid)) {
			t.Fatalf("watch %d, inspected %v, wrote %x", c.watch.Load(), c.retried, sc.written.Bytes())
		}
	})
}

// TestHelloRetryHandshake: a stock crypto/tls server that accepts P-256 only
// answers the uTLS hello of tlsclient (key shares for X25519MLKEM768 and
// X25519) with a HelloRetryRequest; behind a Conn both ClientHellos are
// inspected, the handshake completes, and the flags are the first hello's.
func TestHelloRetryHandshake(t *testing.T) {
	pool, serverCert := testPKI(t)
	for _, tc := range []struct {
		name   string
		curves []tls.CurveID
		retry  bool
	}{
		{"HelloRetry", []tls.CurveID{tls.CurveP256}, true},
		{"NoRetry", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer, raw := tcpPair(t)
			c := NewConn(raw, nil)
			type result struct {
				state tls.ConnectionState
				flags tlsflags.Set // as GetConfigForClient saw them
				err   error
			}
			done := make(chan result, 1)
			go func() {
				var flags tlsflags.Set
				srv := tls.Server(c, &tls.Config{
					Certificates:     []tls.Certificate{serverCert},
					CurvePreferences: tc.curves,
					GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
						flags = chi.Conn.(*Conn).Flags()
						return nil, nil
					},
				})
				err := srv.Handshake()
				done <- result{srv.ConnectionState(), flags, err}
			}()
			spec, err := tlsclient.Hello{Flags: tlsflags.Must(80), NextProtos: []string{"h2"}}.Spec()
			if err != nil {
				t.Fatal(err)
			}
			uc := utls.UClient(peer, &utls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, utls.HelloCustom)
			if err := uc.ApplyPreset(spec); err != nil {
				t.Fatal(err)
			}
			if err := uc.Handshake(); err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			r := <-done
			if r.err != nil {
				t.Fatalf("server handshake: %v", r.err)
			}
			if r.state.HelloRetryRequest != tc.retry {
				t.Fatalf("HelloRetryRequest %v, want %v: the test did not test what it says", r.state.HelloRetryRequest, tc.retry)
			}
			if c.retried != tc.retry {
				t.Errorf("second ClientHello inspected: %v, want %v", c.retried, tc.retry)
			}
			if r.flags != tlsflags.Must(80) || c.Flags() != tlsflags.Must(80) {
				t.Errorf("flags %v in GetConfigForClient, %v after, want [80]", r.flags, c.Flags())
			}
			if st := c.watch.Load(); st != watchOff {
				t.Errorf("still watching writes (%d) after the handshake", st)
			}
			if r.state.Version != tls.VersionTLS13 {
				t.Errorf("version %x", r.state.Version)
			}
		})
	}
}
