package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak runs the server binary under full handshake load for
// REQ_MTLS_SOAK (say 5m; `make soak`), with flagged and unflagged clients,
// with and without certificates, with resumption, sampling the server's RSS
// and goroutines every few seconds. It asserts zero errors, no growth trend
// in RSS, and goroutines back to the baseline afterwards.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("REQ_MTLS_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set REQ_MTLS_SOAK to a duration (make soak) to run the soak test")
	}
	p := newPKI(t)
	logf := filepath.Join(t.TempDir(), "server.log")
	lf, _ := os.Create(logf)
	srv := exec.Command(filepath.Join(binDir, "server"), "-cert", p.f("server.crt"), "-key", p.f("server.key"),
		"-client-cacert", p.f("rootCA.crt"), "-listen-addr", "127.0.0.1:0", "-pprof-addr", "127.0.0.1:0")
	srv.Stderr = lf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var addr, pprofAddr string
	for range 200 {
		data, _ := os.ReadFile(logf)
		if m := listening.FindSubmatch(data); m != nil {
			addr = string(m[1])
		}
		if m := regexp.MustCompile(`msg="pprof listening" addr=(\S+)`).FindSubmatch(data); m != nil {
			pprofAddr = string(m[1])
		}
		if addr != "" && pprofAddr != "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if addr == "" || pprofAddr == "" {
		t.Fatal("server did not start")
	}
	rss := func() int64 {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", srv.Process.Pid))
		m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(data)
		if m == nil {
			return 0
		}
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		return n
	}
	goroutines := func() int {
		resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total ")))
		io.Copy(io.Discard, resp.Body)
		return n
	}
	baseG := goroutines()

	url := "https://" + addr + "/debug"
	common := []string{"-server-cacert", p.f("rootCA.crt"), "-connect", url, "-n", "300", "-c", "1"}
	withCert := []string{"-cert", p.f("client.crt"), "-key", p.f("client.key")}
	loads := map[string][]string{
		"flagged+cert":        append(append([]string{"-tlsflags", "80"}, withCert...), common...),
		"flagged+cert+resume": append(append([]string{"-tlsflags", "80", "-resume"}, withCert...), common...),
		"flagged, no cert":    append([]string{"-tlsflags", "80"}, common...),
		"unflagged+cert":      append(withCert, common...),
	}
	deadline := time.Now().Add(d)
	var requests, failures atomic.Int64
	var wg sync.WaitGroup
	for name, args := range loads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				out, err := exec.Command(filepath.Join(binDir, "client"), args...).CombinedOutput()
				m := regexp.MustCompile(`requests:\s+(\d+) in .*, (\d+) ok, (\d+) errors`).FindSubmatch(out)
				if err != nil || m == nil {
					failures.Add(1)
					t.Errorf("%s: %v\n%s", name, err, out)
					continue
				}
				n, _ := strconv.Atoi(string(m[1]))
				requests.Add(int64(n))
			}
		}()
	}
	type sample struct {
		at         time.Duration
		rssKB      int64
		goroutines int
	}
	var samples []sample
	start := time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(5 * time.Second)
		s := sample{time.Since(start).Round(time.Second), rss(), goroutines()}
		samples = append(samples, s)
		t.Logf("t=%-5v rss=%6d KiB goroutines=%4d requests=%d", s.at, s.rssKB, s.goroutines, requests.Load())
	}
	wg.Wait()
	time.Sleep(3 * time.Second)
	endG := goroutines()
	total := requests.Load()
	t.Logf("soak: %v, %d requests (%.0f/s), %d failed runs; RSS first %d KiB, last %d KiB; goroutines %d before, %d after",
		d, total, float64(total)/d.Seconds(), failures.Load(), samples[0].rssKB, samples[len(samples)-1].rssKB, baseG, endG)
	if failures.Load() > 0 {
		t.Errorf("%d load runs failed", failures.Load())
	}
	if endG > baseG+2 {
		t.Errorf("goroutines: %d before, %d after", baseG, endG)
	}
	// No growth trend: the median RSS of the last third is not above the
	// median of the second third by more than 10% (the first third is
	// warm-up).
	third := len(samples) / 3
	if third >= 2 {
		rssOf := func(ss []sample) []int64 {
			var v []int64
			for _, x := range ss {
				v = append(v, x.rssKB)
			}
			return v
		}
		mid, last := medianInt(rssOf(samples[third:2*third])), medianInt(rssOf(samples[2*third:]))
		t.Logf("median RSS: middle third %d KiB, last third %d KiB", mid, last)
		if last > mid+mid/10 {
			t.Errorf("RSS grows: %d KiB then %d KiB", mid, last)
		}
	}
	if data, _ := os.ReadFile(logf); strings.Contains(string(data), "level=ERROR") || strings.Contains(string(data), "handshake failed") {
		t.Errorf("server logged errors:\n%s", data)
	}
}

func medianInt(v []int64) int64 {
	slices.Sort(v)
	return v[len(v)/2]
}
