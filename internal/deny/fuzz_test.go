package deny

import (
	"strings"
	"testing"
)

// FuzzParse: whatever parses has as many entries as non-comment lines, and
// nothing panics.
func FuzzParse(f *testing.F) {
	f.Add("cert-sha256:" + strings.Repeat("ab", 32) + "\n# c\njwk:" + strings.Repeat("A", 43))
	f.Add("agent:https://bot.example # x\nspki-sha256:" + strings.Repeat("0", 64))
	f.Add("bad")
	f.Fuzz(func(t *testing.T, in string) {
		l, err := Parse([]byte(in))
		if err != nil {
			return
		}
		n := 0
		for _, line := range strings.Split(in, "\n") {
			line, _, _ = strings.Cut(line, "#")
			if strings.TrimSpace(line) != "" {
				n++
			}
		}
		if l.Len() != n {
			t.Errorf("Len = %d, want %d entries for %q", l.Len(), n, in)
		}
	})
}
