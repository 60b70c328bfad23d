package main

import (
	"bufio"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLoad runs the load comparison briefly, unpinned, against this server
// with its four variants, and nginx and Caddy when installed: every
// load through h2load and the bench's client, every table and chart.
// h2load is needed (nghttp2-client): without it the test skips, or fails
// where REQ_MTLS_REQUIRE_PEERS is set.
func TestLoad(t *testing.T) {
	h2load := needPeer(t, "h2load", "nghttp2-client")
	dir, origin := t.TempDir(), testOrigin(t)
	names := []string{"access-log", "rules", "agent", "redis"}
	want := []string{"ours", oursLogged, oursRules, oursAgent, oursRedis}
	if _, err := exec.LookPath("redis-server"); err != nil && os.Getenv("REQ_MTLS_REQUIRE_PEERS") == "" {
		t.Log("redis-server is not installed: the Redis variant left out")
		names, want = names[:3], want[:4]
	}
	vs, err := findVariants(names)
	if err != nil {
		t.Fatal(err)
	}
	env := &gatewayEnv{dir: dir, pki: makePKI(dir, "load", false), origin: origin, serverBin: serverBin,
		nginx: findPeer("nginx", ""), caddy: findPeer("caddy", ""), verifyingOnly: true, variants: vs}
	t.Cleanup(stopAll)
	for _, v := range vs {
		if v.setup != nil {
			if err := v.setup(env); err != nil {
				t.Fatalf("%s: %v", v.name, err)
			}
		}
	}
	lp := loadParams{rounds: 2, h2load: h2load, duration: 300 * time.Millisecond, clients: 2, streams: 2, newConns: 4,
		flagged: 10, flagConc: 2, idleRate: 100, idleN: 10, fracs: []float64{0.25, 0.5, 0.75}, warmMax: warmBatch}
	starts := 0
	res, err := runLoad(func() ([]*terminator, error) { starts++; return startTerminators(env) }, env.pki, lp, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	if starts != lp.rounds {
		t.Errorf("the terminators were started %d times in %d rounds, want once per round", starts, lp.rounds)
	}
	if env.caddy != "" {
		want = append(want, "Caddy")
	}
	if env.nginx != "" {
		want = append(want, "nginx")
	}
	var got []string
	for _, term := range res.ts {
		got = append(got, term.name)
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("terminators %q, want %q", got, want)
	}
	for i, term := range res.ts {
		for _, x := range res.res[i] {
			if x.keptAlive.wall <= 0 || x.keptAlive.perCore <= 0 || x.newConns.wall <= 0 || x.newConns.perCore <= 0 ||
				x.flagged.wall <= 0 || x.flagged.perCore <= 0 {
				t.Errorf("%s: a rate not measured: %+v", term.name, x)
			}
			if len(x.fixed) != len(lp.fracs) {
				t.Fatalf("%s: %d fixed-rate measurements, want %d", term.name, len(x.fixed), len(lp.fracs))
			}
			for _, l := range append(x.fixed, x.oneAtATime) {
				if l.n == 0 || l.p50 <= 0 || l.p99 < l.p50 || l.p999 < l.p99 {
					t.Errorf("%s: implausible latencies %+v", term.name, l)
				}
			}
		}
	}
	// The Redis variant's limit was counted in Redis: an EVALSHA per
	// request (its loads sent thousands).
	if env.redisAddr != "" {
		calls, err := redisCalls(env.redisAddr)
		if err != nil {
			t.Fatal(err)
		}
		if calls["evalsha"] < 1000 {
			t.Errorf("redis-server ran %d EVALSHA: the Redis variant did not take its limits there (%v)", calls["evalsha"], calls)
		} else {
			t.Logf("redis-server ran %d EVALSHA", calls["evalsha"])
		}
	}
	// The fixed rates are fractions of the reference's saturation, which
	// lies within what nginx (or ours) measured across the rounds.
	ref := max(res.index("nginx"), 0)
	lo, hi := math.Inf(1), 0.0
	for _, x := range res.res[ref] {
		lo, hi = min(lo, x.keptAlive.wall), max(hi, x.keptAlive.wall)
	}
	if len(res.targets) != len(lp.fracs) || res.reference <= 0 {
		t.Fatalf("fixed rates %v from %v", res.targets, res.reference)
	}
	// The reference is the median of the first round's run and two
	// more: within a factor of two of the rounds' runs on a busy machine.
	if res.reference < lo/2 || res.reference > 2*hi {
		t.Errorf("reference saturation %.0f/s, the rounds measured %.0f to %.0f", res.reference, lo, hi)
	}
	for k, f := range lp.fracs {
		if math.Abs(res.targets[k]-f*res.reference) > 1e-6 {
			t.Errorf("fixed rate %d: %.0f, want %.0f %% of %.0f", k, res.targets[k], f*100, res.reference)
		}
	}
	md := res.markdown(lp, nil)
	for _, term := range res.ts {
		if !strings.Contains(md, "| "+term.name+" | ") || !strings.Contains(md, "| "+term.name+" | one at a time |") {
			t.Errorf("no rows for %s in:\n%s", term.name, md)
		}
	}
	g := res.goals(lp)
	if !strings.Contains(g, oursLogged+" ÷ ours") {
		t.Errorf("no line for the access log variant in:\n%s", g)
	}
	if env.nginx != "" {
		for _, goal := range []string{"ours ÷ nginx", "new flagged connections/s", "p99 at 50 %", "one request at a time, p50, ours − nginx"} {
			if !strings.Contains(g, goal) {
				t.Errorf("no %q goal in:\n%s", goal, g)
			}
		}
	}
	for _, s := range []string{svg(res.bars(), loadChart), svg(res.latencyBars(lp), latencyChart)} {
		if !strings.Contains(s, "<rect") || !strings.Contains(s, ">ours<") {
			t.Errorf("chart without bars: %s", s)
		}
	}
	if s := svg(res.bars(), loadChart); !strings.Contains(s, "/s</text>") {
		t.Errorf("saturation chart without its unit: %s", s)
	}
}

// TestParseH2load reads h2load's summaries: a run whose every request got
// a 2xx, and the ones the bench must refuse.
func TestParseH2load(t *testing.T) {
	const timed = `finished in 3.00s, 19203.00 req/s, 845.55KB/s
requests: 57609 total, 57709 started, 57609 done, 57609 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 57620 2xx, 0 3xx, 0 4xx, 0 5xx
`
	r, err := parseH2load(timed)
	if err != nil {
		t.Fatal(err)
	}
	if r.done != 57609 || r.elapsed != 3*time.Second {
		t.Errorf("timed run: %d requests in %v, want 57609 in 3s", r.done, r.elapsed)
	}
	r, err = parseH2load(strings.NewReplacer("3.00s", "61.52ms").Replace(timed))
	if err != nil || r.elapsed != 61520*time.Microsecond {
		t.Errorf("run in milliseconds: %v, %v", r.elapsed, err)
	}
	for _, c := range []struct{ name, out string }{
		{"Failed", strings.Replace(timed, "57609 succeeded, 0 failed", "57600 succeeded, 9 failed", 1)},
		{"Status4xx", strings.Replace(timed, "0 4xx", "3 4xx", 1)},
		{"Status5xx", strings.Replace(timed, "0 5xx", "1 5xx", 1)},
		{"NoSummary", "starting benchmark...\n"},
		{"NoRequests", strings.NewReplacer("57609", "0", "57620", "0").Replace(timed)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if r, err := parseH2load(c.out); err == nil {
				t.Errorf("accepted: %+v", r)
			}
		})
	}
}

// TestReadH2loadLog reads the per-request log's third column, and refuses
// a line it cannot read.
func TestReadH2loadLog(t *testing.T) {
	f := filepath.Join(t.TempDir(), "log")
	os.WriteFile(f, []byte("1733580000000000\t200\t512\n1733580000000100\t200\t1024\n"), 0o600)
	lat, err := readH2loadLog(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 2 || lat[0] != 512*time.Microsecond || lat[1] != 1024*time.Microsecond {
		t.Errorf("latencies %v, want [512µs 1.024ms]", lat)
	}
	os.WriteFile(f, []byte("1733580000000000\t200\tsoon\n"), 0o600)
	if _, err := readH2loadLog(f); err == nil || !strings.Contains(err.Error(), `"soon"`) {
		t.Errorf("a bad line: err = %v, want one quoting it", err)
	}
}

// TestQuantile: nearest rank, on a thousand values 1..1000 µs.
func TestQuantile(t *testing.T) {
	var v []time.Duration
	for i := 1; i <= 1000; i++ {
		v = append(v, time.Duration(i)*time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {0.999, 999 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		if got := quantile(v, c.q); got != c.want {
			t.Errorf("quantile %v = %v, want %v", c.q, got, c.want)
		}
	}
	if got := quantile([]time.Duration{7}, 0.999); got != 7 {
		t.Errorf("quantile of one value = %v", got)
	}
}

// TestFindVariants: a variant this build lacks is named in the error, with
// those it has.
func TestFindVariants(t *testing.T) {
	if vs, err := findVariants([]string{"access-log"}); err != nil || len(vs) != 1 || vs[0].label != oursLogged {
		t.Errorf("access-log: %v, %v", vs, err)
	}
	_, err := findVariants([]string{"access-log", "quic"})
	if err == nil || !strings.Contains(err.Error(), `"quic"`) || !strings.Contains(err.Error(), "access-log, rules, agent, redis") {
		t.Errorf("an unknown variant: err = %v", err)
	}
}

// TestSVGPerGroup: a chart scaled per group draws each group's largest bar
// full width; the others share one scale.
func TestSVGPerGroup(t *testing.T) {
	bars := []bar{{group: "p99", label: "ours", value: 10000}, {group: "p50", label: "ours", value: 100}}
	if s := svg(bars, latencyChart); strings.Count(s, `width="420"`) != 2 {
		t.Errorf("per group: want both bars 420 wide:\n%s", s)
	}
	if s := svg(bars, gatewayChart); strings.Count(s, `width="420"`) != 1 || !strings.Contains(s, `width="4" `) {
		t.Errorf("one scale: want bars 420 and 4 wide:\n%s", s)
	}
}

// TestShared runs the shared-state comparison briefly: every signed request
// verified at both servers (gatewayGetSigned), and the Redis server's
// nonces and limits counted in Redis: one script call (EVALSHA) for each
// request, no SET but the probes'.
func TestShared(t *testing.T) {
	needPeer(t, "redis-server", "redis-server")
	dir, origin := t.TempDir(), testOrigin(t)
	t.Cleanup(stopAll)
	env := &gatewayEnv{dir: dir, pki: makePKI(dir, "shared", false), origin: origin, serverBin: serverBin}
	sp := sharedParams{rounds: 2, n: 100, chunks: 3, concs: []int{1, 4}, warmMax: warmBatch, floorN: 200}
	if err := setupRedis(env); err != nil {
		t.Fatal(err)
	}
	sent := monitorRedis(t, env.redisAddr)
	r, err := runShared(env, sp, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	// What the servers sent, as MONITOR saw it: a SET a script ran is
	// its own ([0 lua]), not a round trip.
	if cmds := sent(); cmds["set reqmtls:nonce:"] != 0 || cmds["evalsha"] < r.requests() {
		t.Errorf("the servers sent %v for %d signed requests; want an EVALSHA each and no SET of a nonce (set in the script)", cmds, r.requests())
	}
	// Each server's loads: warm-up (5 a load) and measured, per round and
	// concurrency; the Redis server's each took a nonce and a limit there,
	// in one script call.
	calls, err := redisCalls(env.redisAddr)
	if err != nil {
		t.Fatal(err)
	}
	if want := r.requests(); want < sp.rounds*len(sp.concs)*sp.n {
		t.Errorf("%d signed requests counted, want at least %d", want, sp.rounds*len(sp.concs)*sp.n)
	} else if line, err := sharedCalls(nil, calls, want); err != nil {
		t.Error(err)
	} else {
		t.Log(line)
	}
	md := r.markdown(sp)
	if len(r.floor) != sp.rounds || slices.Contains(r.floor, 0) {
		t.Errorf("the bare round trips to Redis, per round: %v", r.floor)
	}
	for _, want := range []string{"| 1 | ", "| 4 | ", "1 at a time, CPU per request: ", "4 at a time, p50: ", "in 3 loads alternating", "a bare round trip to this redis-server"} {
		if !strings.Contains(md, want) {
			t.Errorf("the table lacks %q:\n%s", want, md)
		}
	}
	t.Log("\n" + md)
}

// monitorRedis follows redis-server's MONITOR until the returned function
// is called, and counts the commands clients sent (not those scripts ran):
// by name, and for SET by name and key prefix ("set reqmtls:nonce:").
func monitorRedis(t *testing.T, addr string) func() map[string]int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			// +1733580000.123456 [0 127.0.0.1:40000] "evalsha" "..." ...
			_, rest, ok := strings.Cut(sc.Text(), "] ")
			if !ok || strings.Contains(sc.Text(), " lua] ") {
				continue
			}
			f := strings.Fields(rest)
			name := strings.ToLower(strings.Trim(f[0], `"`))
			counts[name]++
			if name == "set" && len(f) > 1 {
				key := strings.Trim(f[1], `"`)
				if i := strings.LastIndexByte(key, ':'); i >= 0 {
					counts["set "+key[:i+1]]++
				}
			}
		}
	}()
	return func() map[string]int {
		c.Close()
		<-done
		return counts
	}
}

// TestLoadChartColors: every terminator of the load comparison has its
// colour in the charts (a missing one draws its bars black).
func TestLoadChartColors(t *testing.T) {
	names := []string{"ours", oursBaseline, "Caddy", "nginx"}
	for _, v := range loadVariants {
		names = append(names, v.label)
	}
	for _, n := range names {
		if loadChart.colors[n] == "" {
			t.Errorf("%q has no colour in the load chart", n)
		}
	}
}

// TestStartProfiledAlone: the profiled server starts alone, whatever else
// the part's environment runs (access log, rules, variants, peers), and
// serves pprof.
func TestStartProfiledAlone(t *testing.T) {
	dir, origin := t.TempDir(), testOrigin(t)
	t.Cleanup(stopAll)
	vs, err := findVariants([]string{"access-log", "rules"})
	if err != nil {
		t.Fatal(err)
	}
	env := &gatewayEnv{dir: dir, pki: makePKI(dir, "profiled", false), origin: origin, serverBin: serverBin,
		accessLog: true, rules: true, variants: vs, nginx: findPeer("nginx", ""), caddy: findPeer("caddy", "")}
	startedMu.Lock()
	before := len(started)
	startedMu.Unlock()
	term, pa, err := startProfiled(env, false)
	if err != nil {
		t.Fatal(err)
	}
	startedMu.Lock()
	n := len(started) - before
	startedMu.Unlock()
	if n != 1 || term.name != "ours" {
		t.Errorf("started %d processes (the first %q), want ours alone", n, term.name)
	}
	resp, err := http.Get("http://" + pa + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("pprof at %s: %s", pa, resp.Status)
	}
}

// needPeer returns the path of a program the test needs, from the Debian
// package pkg: without it the test skips, or fails where
// REQ_MTLS_REQUIRE_PEERS is set.
func needPeer(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("REQ_MTLS_REQUIRE_PEERS") != "" {
			t.Fatalf("%s is not installed (REQ_MTLS_REQUIRE_PEERS is set): apt-get install %s", name, pkg)
		}
		t.Skipf("%s is not installed: apt-get install %s", name, pkg)
	}
	return p
}

// testOrigin runs the bench's origin in the test's process until it ends.
func testOrigin(t *testing.T) string {
	t.Helper()
	origin, stop, err := startOriginInProcess()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return origin
}
