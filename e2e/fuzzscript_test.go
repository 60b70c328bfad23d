package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestFuzzDeadlineRace: make fuzz runs a target again once when its run
// failed with nothing but Go's own race at the -fuzztime deadline
// (go.dev/issue/75804: "context deadline exceeded", no input written), and
// never for a finding, a panic or any other message. The logs under
// testdata/fuzzlogs are one of each; deadline-race.log is a real one.
func TestFuzzDeadlineRace(t *testing.T) {
	for file, want := range map[string]string{
		"deadline-race.log":      "deadline-race",
		"finding.log":            "failure",
		"deadline-and-error.log": "failure",
		"panic.log":              "failure",
	} {
		log, err := filepath.Abs(filepath.Join("testdata", "fuzzlogs", file))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("bash", filepath.Join("..", "scripts", "fuzz.sh"))
		cmd.Env = append(os.Environ(), "FUZZ_CLASSIFY="+log)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", file, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("%s: classified %q, want %q", file, got, want)
		}
	}
}
