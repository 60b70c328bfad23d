package httpsig

import (
	"net/http"
	"slices"
	"testing"
)

// TestBaseLeavesRequestAlone: building the signature base reads the
// request's fields and never changes them (Section 2.1 trims each value
// for the base, not in the message).
func TestBaseLeavesRequestAlone(t *testing.T) {
	r, _ := http.NewRequest("GET", "https://example.com/", nil)
	r.Header["Signature-Agent"] = []string{" \"https://bot.example\"\t"}
	r.Header["X-Two"] = []string{"a ", "\tb"}
	want := r.Header.Clone()
	base, err := Base(r, NewCovered([]string{"signature-agent", "x-two"}, Params{}))
	if err != nil {
		t.Fatal(err)
	}
	if wantBase := "\"signature-agent\": \"https://bot.example\"\n\"x-two\": a, b\n\"@signature-params\": (\"signature-agent\" \"x-two\")"; base != wantBase {
		t.Errorf("base:\n%s\nwant:\n%s", base, wantBase)
	}
	for name, v := range want {
		if !slices.Equal(r.Header[name], v) {
			t.Errorf("Base changed the request's %s from %q to %q", name, v, r.Header[name])
		}
	}
}
