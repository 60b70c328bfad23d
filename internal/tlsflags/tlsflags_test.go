package tlsflags

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Vectors from ../shared/SPEC.md sections 1 and 2 and the draft's own example.
var vectors = []struct {
	name  string
	flags []int
	hex   string
	text  string
}{
	{"RequestMTLS", []int{80}, "0b 00 00 00 00 00 00 00 00 00 00 01", "[80]"},
	{"Flags_8_12_170", []int{8, 12, 170}, "16 00 11" + strings.Repeat(" 00", 19) + " 04", "[8 12 170]"},
	{"DraftExample_3_5_23", []int{3, 5, 23}, "03 28 00 80", "[3 5 23]"},
	{"Flag0", []int{0}, "01 01", "[0]"},
	{"MaxFlag", []int{MaxFlag}, "ff" + strings.Repeat(" 00", 254) + " 80", "[2039]"},
}

func TestVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			want := unhex(t, v.hex)
			s := Must(v.flags...)
			got, err := s.ExtensionData()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("ExtensionData = %x, want %x", got, want)
			}
			p, err := Parse(want)
			if err != nil {
				t.Fatalf("Parse(%x): %v", want, err)
			}
			if p != s {
				t.Errorf("Parse = %v, want %v", p, s)
			}
			if p.String() != v.text {
				t.Errorf("String = %q, want %q", p.String(), v.text)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ name, hex string }{
		{"NoData", ""},
		{"EmptyVector", "00"},
		{"AllZero", "01 00"},
		{"AllZeroLong", "03 00 00 00"},
		{"TrailingZeroByte", "02 01 00"},
		{"LengthTooLong", "03 01 01"},
		{"LengthTooShort", "01 01 01"},
		{"TrailingBytes", "01 01 ff"},
		{"LengthOnly", "05"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(unhex(t, tc.hex))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%s) = %v, %v; want ErrMalformed", tc.hex, s, err)
			}
		})
	}
}

// TestRoundTrip checks on random sets that encoding is minimal and parses back
// to the same set, and that no strict prefix of an encoding parses.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var flags []int
		for range 1 + r.IntN(12) {
			if r.IntN(4) == 0 {
				flags = append(flags, r.IntN(MaxFlag+1))
			} else {
				flags = append(flags, r.IntN(200))
			}
		}
		s := Must(flags...)
		enc, err := s.ExtensionData()
		if err != nil {
			t.Fatal(err)
		}
		if enc[len(enc)-1] == 0 || int(enc[0]) != len(enc)-1 {
			t.Fatalf("%v: non-minimal encoding %x", flags, enc)
		}
		got, err := Parse(enc)
		if err != nil || got != s {
			t.Fatalf("%v: Parse(%x) = %v, %v", flags, enc, got, err)
		}
		for _, f := range flags {
			if !got.Has(f) {
				t.Fatalf("%v: lost flag %d", flags, f)
			}
		}
		if len(got.Flags()) > len(flags) {
			t.Fatalf("%v: gained flags %v", flags, got.Flags())
		}
		for i := range len(enc) {
			if _, err := Parse(enc[:i]); err == nil {
				t.Fatalf("%v: prefix %x of %x parsed", flags, enc[:i], enc)
			}
		}
	}
}

func TestNewRange(t *testing.T) {
	for _, f := range []int{-1, MaxFlag + 1, 1 << 20} {
		if _, err := New(f); err == nil {
			t.Errorf("New(%d) succeeded", f)
		}
	}
	if _, err := (Set{}).ExtensionData(); err == nil {
		t.Error("empty set encoded")
	}
	if (Set{}).String() != "[]" {
		t.Errorf("empty String = %q", Set{}.String())
	}
}

func TestIntersect(t *testing.T) {
	a, b := Must(8, 12, 80, 170), Must(80, 12, 2000)
	if got := a.Intersect(b); got != Must(12, 80) {
		t.Errorf("Intersect = %v", got)
	}
	if got := Must(170).Intersect(Must(80)); !got.IsEmpty() || got != (Set{}) {
		t.Errorf("disjoint Intersect = %v, want canonical empty set", got)
	}
}

func TestParseList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Set
	}{
		{"80", Must(80)},
		{"0x50", Must(80)},
		{"0X50", Must(80)},
		{"8,170,12", Must(8, 12, 170)},
		{" 8 , 0xAA ", Must(8, 170)},
		{"2039", Must(2039)},
	} {
		got, err := ParseList(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "80,", ",80", "2040", "-1", "0x", "abc", "80,80", "0x50,80", "1e3", "+5"} {
		if s, err := ParseList(bad); err == nil {
			t.Errorf("ParseList(%q) = %v, want error", bad, s)
		}
	}
}

func TestJSON(t *testing.T) {
	b, _ := Must(8, 12, 170).MarshalJSON()
	if string(b) != "[8,12,170]" {
		t.Errorf("MarshalJSON = %s", b)
	}
	b, _ = Set{}.MarshalJSON()
	if string(b) != "[]" {
		t.Errorf("empty MarshalJSON = %s", b)
	}
}

// FuzzParse demands canonical encoding: whatever parses re-encodes to exactly
// the same bytes.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.hex")
	for _, name := range seeds {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(unhex(f, strings.TrimSpace(string(data))))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		enc, err := s.ExtensionData()
		if err != nil {
			t.Fatalf("parsed %x but cannot encode: %v", data, err)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("Parse(%x) re-encodes as %x", data, enc)
		}
		again, err := New(s.Flags()...)
		if err != nil || again != s {
			t.Fatalf("Flags() of %x do not rebuild the set", data)
		}
	})
}

func BenchmarkExtensionData(b *testing.B) {
	s := Must(RequestMTLS)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.ExtensionData(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	data := unhex(b, "0b 00 00 00 00 00 00 00 00 00 00 01")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
