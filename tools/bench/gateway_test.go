package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/client"
)

// TestGateway runs the gateway comparison briefly, unpinned: this server
// as the gateway always, nginx and Caddy when installed (the subtests say
// when they are not), through every round, table and chart.
func TestGateway(t *testing.T) {
	dir, origin := t.TempDir(), testOrigin(t)
	env := &gatewayEnv{dir: dir, pki: makePKI(dir, "gateway", false), origin: origin, serverBin: serverBin, accessLog: true, rules: true}
	for _, peer := range []struct {
		name string
		path *string
	}{{"nginx", &env.nginx}, {"caddy", &env.caddy}} {
		t.Run(peer.name, func(t *testing.T) {
			p, err := exec.LookPath(peer.name)
			if err != nil {
				if *peer.path = findPeer(peer.name, ""); *peer.path == "" {
					t.Skipf("%s is not installed: the comparison skips it (on Debian: apt-get install %s)", peer.name, peer.name)
				}
				return
			}
			*peer.path = p
		})
	}
	ts, err := startTerminators(env)
	t.Cleanup(stopAll)
	if err != nil {
		t.Fatal(err)
	}
	want := 3
	if env.nginx != "" {
		want += 2
	}
	if env.caddy != "" {
		want += 2
	}
	if len(ts) != want {
		t.Fatalf("%d terminators started, want %d", len(ts), want)
	}
	gp := gatewayParams{rounds: 2, newConnN: 6, keepAliveN: 20, newConnConc: 2, keepAliveConc: 2, warmMax: warmBatch}
	stopTerminators(ts)
	starts := 0
	res, err := runGateway(func() ([]*terminator, error) { starts++; return startTerminators(env) }, env.pki, gp, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	if starts != gp.rounds {
		t.Errorf("the terminators were started %d times in %d rounds, want once per round", starts, gp.rounds)
	}
	for i, term := range ts {
		for m, mode := range gatewayModes {
			cpu := res.cpu(i, m)
			p50, p99 := res.latency(i, m)
			t.Logf("%s, %s: %.0f µs of CPU per request, p50 %s, p99 %s", term.name, mode.label, cpu, ms(p50), ms(p99))
			if cpu <= 0 || p50 <= 0 || p99 < p50 {
				t.Errorf("%s, %s: implausible: %.0f µs, p50 %v, p99 %v", term.name, mode.label, cpu, p50, p99)
			}
		}
	}
	md := res.markdown(gp, []string{"nothing skipped here"})
	for _, term := range ts {
		if !strings.Contains(md, "| "+term.name+" |") {
			t.Errorf("no row for %s in:\n%s", term.name, md)
		}
	}
	if g := res.goals(); !strings.Contains(g, "access log on ÷ off") || !strings.Contains(g, "one kept-alive HTTP/2 connection, 50 rules ÷ none") {
		t.Errorf("no access log or rules goal in:\n%s", g)
	}
	if s := svg(res.bars(), gatewayChart); !strings.Contains(s, "<rect") || !strings.Contains(s, "ours") {
		t.Errorf("chart without bars: %s", s)
	}
}

// TestFindPeerMissing: a terminator that is not there is skipped, not fatal.
func TestFindPeerMissing(t *testing.T) {
	if p := findPeer("nginx", "/nonexistent/nginx"); p != "" {
		t.Errorf("findPeer of a missing file = %q", p)
	}
}

// TestBenchMDParts: a run of one part keeps the other's results.
func TestBenchMDParts(t *testing.T) {
	both := joinBenchMD("handshakes\n", "gateway\n")
	hs, gw := splitBenchMD(both)
	if hs != "handshakes" || gw != "gateway" {
		t.Errorf("split(join) = %q, %q", hs, gw)
	}
	if hs, gw := splitBenchMD("old handshakes only\n"); hs != "old handshakes only" || gw != "" {
		t.Errorf("split of a file without the gateway part = %q, %q", hs, gw)
	}
	if got := joinBenchMD("", "gateway"); !strings.HasPrefix(got, gatewayMarker) {
		t.Errorf("join without handshakes = %q", got)
	}
}

// TestMemory measures this server's memory per idle connection and per
// half-sent ClientHello, briefly.
func TestMemory(t *testing.T) {
	dir, origin := t.TempDir(), testOrigin(t)
	env := &gatewayEnv{dir: dir, pki: makePKI(dir, "memory", false), origin: origin, serverBin: serverBin}
	ts, err := startTerminators(env)
	t.Cleanup(stopAll)
	if err != nil {
		t.Fatal(err)
	}
	cc := gatewayClientConfig(env.pki)
	cc.IdleTimeout = time.Minute
	cl, err := client.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := idleCost(ts[0], cl, 200, nil)
	if err != nil {
		t.Fatal(err)
	}
	half, err := halfHello()
	if err != nil {
		t.Fatal(err)
	}
	if half[0] != 22 || len(half) < 50 {
		t.Fatalf("not the start of a handshake record: % x", half[:5])
	}
	perHalf, err := halfCost(ts[0], half, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.1f KiB per idle connection, %.1f KiB per half-sent ClientHello", idle/1024, perHalf/1024)
	// (A hundred half-sent hellos can fit in memory the process
	// already holds: only the idle connections' cost is sure to show.)
	if idle <= 0 {
		t.Errorf("implausible: %.0f bytes per idle connection", idle)
	}
}
