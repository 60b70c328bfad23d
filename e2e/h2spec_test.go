package e2e

import (
	"encoding/xml"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// h2specBinary finds h2spec (github.com/summerwind/h2spec, built by make
// h2spec from tools/h2spec at the version pinned there): $REQ_MTLS_H2SPEC,
// bin/h2spec, or on PATH. Missing, it is a missing peer.
func h2specBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("REQ_MTLS_H2SPEC"), filepath.Join("..", "bin", "h2spec")} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			abs, err := filepath.Abs(p)
			if err != nil {
				t.Fatal(err)
			}
			return abs
		}
	}
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	if os.Getenv("REQ_MTLS_REQUIRE_PEERS") != "" {
		t.Fatal("h2spec not found (make h2spec builds bin/h2spec), and REQ_MTLS_REQUIRE_PEERS is set")
	}
	t.Skip("SKIP: h2spec not found: make h2spec builds bin/h2spec")
	return ""
}

// h2specRun is one run of h2spec against a server: how many cases, and
// the ones that failed, by ID (http2/6.9.1/3: the section, then the case
// number).
type h2specRun struct {
	tests  int
	failed []string
}

func (r h2specRun) String() string {
	return fmt.Sprintf("%d tests, %d passed, %d failed %v", r.tests, r.tests-len(r.failed), len(r.failed), r.failed)
}

// runH2spec runs h2spec over TLS (-t -k) against addr, all cases or the
// ones named, and reads its JUnit report.
func runH2spec(t *testing.T, h2spec, addr string, cases ...string) h2specRun {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "h2spec.xml")
	args := append([]string{"-h", host, "-p", port, "-t", "-k", "-j", report}, cases...)
	out, _ := runErr(nil, h2spec, args...) // it exits 1 when a case fails
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("h2spec %s: no report: %v\n%s", strings.Join(args, " "), err, out)
	}
	var suites struct {
		Suites []struct {
			Package string `xml:"package,attr"`
			Cases   []struct {
				Name    string    `xml:"classname,attr"`
				Failure *struct{} `xml:"failure"`
				Error   *struct{} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &suites); err != nil {
		t.Fatalf("h2spec report: %v", err)
	}
	var r h2specRun
	for _, s := range suites.Suites {
		for i, c := range s.Cases {
			r.tests++
			if c.Failure != nil || c.Error != nil {
				r.failed = append(r.failed, fmt.Sprintf("%s/%d", s.Package, i+1))
			}
		}
	}
	if len(cases) > 0 && r.tests == 0 {
		t.Fatalf("h2spec %s ran no case:\n%s", strings.Join(cases, " "), out)
	}
	return r
}

// TestH2spec runs h2spec against the server answering itself and against
// the gateway in front of an origin, and the same way against stock Go's
// net/http server (HTTP/2 over TLS, the same x/net code underneath): ours
// fail no case that stock Go passes. A case ours fails and stock Go
// passes is run again, alone, up to five times on both: a case that
// passes on ours once, or fails on stock Go once, depends on timing (the
// order in which a response's end and h2spec's next frame meet; alone, the
// server fails 8.1.2.6 about one run in seven), and is logged, not failed. docs/protocol.md lists the cases every Go server fails, with
// the rule each breaks.
func TestH2spec(t *testing.T) {
	h2spec := h2specBinary(t)
	p := newPKI(t)

	answer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "%s %s %s\n", r.Proto, r.Method, r.URL.Path)
	})
	stock := httptest.NewUnstartedServer(answer)
	stock.EnableHTTP2 = true
	stock.Config.ErrorLog = log.New(io.Discard, "", 0) // h2spec's frames make it log each error
	stock.StartTLS()
	defer stock.Close()
	origin := httptest.NewServer(answer)
	defer origin.Close()
	gw, _ := startGateway(t, p, origin.URL)
	targets := []struct{ name, addr string }{
		{"server", startServer(t, p, nil)},
		{"gateway", gw},
	}

	stockAddr := stock.Listener.Addr().String()
	base := runH2spec(t, h2spec, stockAddr)
	t.Logf("stock Go net/http: %s", base)
	if base.tests < 100 {
		t.Fatalf("h2spec ran %d cases against stock Go", base.tests)
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			ours := runH2spec(t, h2spec, tg.addr)
			t.Logf("%s: %s", tg.name, ours)
			if ours.tests != base.tests {
				t.Fatalf("%d cases run, %d against stock Go", ours.tests, base.tests)
			}
			for _, id := range ours.failed {
				if slices.Contains(base.failed, id) {
					continue
				}
				timing := false
				for range 5 {
					if len(runH2spec(t, h2spec, tg.addr, id).failed) == 0 ||
						len(runH2spec(t, h2spec, stockAddr, id).failed) > 0 {
						timing = true
						break
					}
				}
				if timing {
					t.Logf("%s: %s failed once, and passes on a run alone or fails on stock Go too: timing", tg.name, id)
					continue
				}
				t.Errorf("h2spec %s fails on the %s, and passes on stock Go's net/http server (five runs each)", id, tg.name)
			}
		})
	}
}
