package safetext

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"client.example", "client.example"},
		{"CN=req-mtls development root,O=req-mtls development CA", "CN=req-mtls development root,O=req-mtls development CA"},
		{"bücher.example", "bücher.example"},
		{"x\nCert validated: true", `x\nCert validated: true`},
		{"a\r\nb", `a\r\nb`},
		{"\x1b[31mred", `\x1b[31mred`},
		{"evil\u202etxt.exe", `evil\u202etxt.exe`},
		{"line\u2028sep", `line\u2028sep`},
		{"back\\slash", `back\\slash`},
		{`say "hi"`, `say \"hi\"`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"nul\x00", `nul\x00`},
		{"", ""},
	} {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzEscape: whatever the input, the output is one line of printable
// ASCII-safe text, and inputs that are already safe come back unchanged.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"client.example", "x\nCert validated: true", "\u202e", "\xff", `\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := Escape(s)
		if !utf8.ValidString(e) {
			t.Fatalf("Escape(%q) = %q: not valid UTF-8", s, e)
		}
		if strings.ContainsAny(e, "\n\r\x00\x1b\u2028\u2029\u202e") {
			t.Fatalf("Escape(%q) = %q: holds a control character", s, e)
		}
		if isSafe(s) && e != s {
			t.Fatalf("Escape(%q) = %q: changed a safe string", s, e)
		}
		if !isSafeButQuoted(e) {
			t.Fatalf("Escape(%q) = %q: output not printable", s, e)
		}
	})
}

// isSafeButQuoted reports whether e is printable apart from the backslashes
// and quotes that escaping itself adds.
func isSafeButQuoted(e string) bool {
	return isSafe(strings.NewReplacer(`\`, "", `"`, "").Replace(e))
}

// TestIsSafeASCII: the ASCII shortcut decides every byte as the rune test
// does.
func TestIsSafeASCII(t *testing.T) {
	for c := range utf8.RuneSelf {
		s := string(rune(c))
		want := c != '\\' && c != '"' && unicode.IsPrint(rune(c))
		if got := isSafe(s); got != want {
			t.Errorf("isSafe(%q) = %v, want %v", s, got, want)
		}
	}
}
