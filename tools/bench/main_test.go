package main

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// serverBin is bin/server, built by TestMain into a temporary directory,
// since bench measures the server binary rather than the package.
var serverBin string

func TestMain(m *testing.M) {
	if subcommand(os.Args[1:]) {
		return
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "req-mtls-bench-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "github.com/req-mtls/req-mtls/cmd/server", "github.com/req-mtls/req-mtls/cmd/gencert")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/server ./cmd/gencert: %v\n", err)
		return 1
	}
	serverBin = filepath.Join(dir, "server")
	code := m.Run()
	stopAll()
	// No goroutine a test started may outlive the tests.
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

// TestThroughput runs the throughput measurement briefly, with several
// workers, against the server binary on loopback: each worker dials its own
// connections (the path that once shared an error variable between workers,
// which go test -race reports), then all share one kept-alive connection.
func TestThroughput(t *testing.T) {
	p := makePKI(t.TempDir(), "ecdsa", false)
	s := startOurs(serverBin, p)
	t.Cleanup(stopAll)
	u, err := url.Parse("https://" + s.addr + "/debug")
	if err != nil {
		t.Fatal(err)
	}
	for _, keepAlive := range []bool{false, true} {
		for _, workers := range []int{2, 4} {
			rps, p50, p99 := throughput(p, u, keepAlive, workers, 24)
			t.Logf("keep-alive %v, %d workers: %.0f requests/s, p50 %s, p99 %s", keepAlive, workers, rps, ms(p50), ms(p99))
			if rps <= 0 || p50 <= 0 || p99 < p50 {
				t.Errorf("keep-alive %v, %d workers: implausible result: %.0f requests/s, p50 %v, p99 %v", keepAlive, workers, rps, p50, p99)
			}
		}
	}
}

// TestHandshakeCPU runs a few measured handshakes, flagged and not, with
// both worker goroutines.
func TestHandshakeCPU(t *testing.T) {
	p := makePKI(t.TempDir(), "ecdsa", false)
	s := startOurs(serverBin, p)
	t.Cleanup(stopAll)
	for _, flagged := range []bool{true, false} {
		us := handshakeCPU(s, p, "X25519", flagged, 6, 2)
		t.Logf("flagged %v: %.0f µs of server CPU per handshake", flagged, us)
		if us < 0 {
			t.Errorf("flagged %v: negative CPU time %.0f µs", flagged, us)
		}
	}
}
