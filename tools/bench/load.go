package main

// The load comparison: the terminators of the gateway comparison as an
// operator measures them, with h2load (nghttp2-client): how much each
// serves on its one core at saturation, and what latency its clients see at
// fixed loads below it.
//
//   - Saturation, kept alive: h2load with -c clients of -m streams each
//     over kept-alive HTTP/2 connections, for a fixed time.
//   - Saturation, new connections: h2load -c N -n N (a new connection per
//     request: a full TLS 1.3 handshake, one request), run again and again
//     for a fixed time. h2load cannot send TLS flag 80 nor a client
//     certificate: these handshakes are unflagged, and ours asks for no
//     certificate where nginx and Caddy ask every client for one (which the
//     client answers with none).
//   - Saturation, new flagged connections: the bench's own client (the
//     client of make bench's gateway comparison, as bin/client -n -c does
//     it): flag 80 and a client certificate on a new connection per
//     request, several at a time. nginx and Caddy ask every client for a
//     certificate, ours the flagged ones: every handshake is mutual.
//   - Latency at fixed rates: h2load --rps with the same clients and
//     streams, at 25, 50 and 75 % of nginx's kept-alive saturation (its
//     first round's), p50, p99 and p99.9 from its per-request log
//     (--log-file).
//   - One request at a time on an idle kept-alive connection: h2load -c 1
//     -m 1 at a low rate, each request on a connection that waited for it.
//
// Rates are given two ways: per second of wall time, and per second of the
// terminator's own CPU time ("per core": the terminator runs on one core,
// and at saturation both are the same; below it, the second says what a
// core would do).

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/req-mtls/req-mtls/internal/client"
)

// loadParams sizes the load comparison.
type loadParams struct {
	rounds   int
	h2load   string        // the h2load binary
	duration time.Duration // of each saturation and fixed-rate measurement
	clients  int           // h2load -c, kept alive
	streams  int           // h2load -m
	newConns int           // h2load -c N -n N, per h2load run
	flagged  int           // new flagged connections per terminator per round
	flagConc int           // at a time
	idleRate int           // requests per second, one at a time
	idleN    int           // requests one at a time per terminator per round
	fracs    []float64     // fixed rates, as fractions of nginx's saturation
	variants []string      // loadVariants names to run beside ours
	warmMax  int
}

// A loadVariant is this server run once more beside the plain one, with
// something on that the request path pays for. Adding one is an entry
// here: its name (for -load-variants), its label in the tables, what it
// starts beside the server once per run, the server's arguments, and the
// client of the flagged loads when it needs a certificate of its own.
type loadVariant struct {
	name, label, conf string
	// setup, when set, starts what the variant needs beside the server
	// (on the load's core: it stands for another machine) once per run.
	setup func(env *gatewayEnv) error
	// args are the server's arguments, given the plain server's.
	args func(env *gatewayEnv, common []string) ([]string, error)
	// client, when set, makes the client of the flagged loads and of the
	// warm-up: the certificate it presents is the variant's.
	client func(env *gatewayEnv) (*client.Client, error)
}

// loadVariants are the variants this build can run.
var loadVariants = []loadVariant{
	{name: "access-log", label: oursLogged, conf: "the same with -access-log FILE: a line per request",
		args: func(env *gatewayEnv, common []string) ([]string, error) {
			return append(common, "-access-log", filepath.Join(env.dir, "access-load.log")), nil
		}},
	// h2load sends no certificate: the rules hold no certificate
	// predicate, so that its requests too read each rule to its last
	// one (path and method hold, the name does not).
	{name: "rules", label: oursRules, conf: fmt.Sprintf("the same by a configuration file with %d rules, none matching, each read to its last predicate (path and method hold, san does not)", benchRules),
		args: func(env *gatewayEnv, _ []string) ([]string, error) {
			return configArgs(env, "rules-load.yaml", rulesConfigMatching(env, "path: /, method: GET, san: bot-%d.example"))
		}},
	{name: "agent", label: oursAgent, conf: "-signature-agents: the flagged client's certificate is an agent's (gencert -agent), vouched for by its directory (bin/server -signature-directory on the load's core), with no client CA",
		setup: setupAgent,
		args: func(env *gatewayEnv, _ []string) ([]string, error) {
			return []string{"-cert", env.pki.serverCert, "-key", env.pki.serverKey, "-upstream", "http://" + env.origin,
				"-listen-addr", "127.0.0.1:0", "-signature-agents", env.agent.list, "-signature-agents-cacert", env.pki.rootCA}, nil
		},
		client: func(env *gatewayEnv) (*client.Client, error) {
			c := gatewayClientConfig(env.pki)
			c.CertFile, c.KeyFile = env.agent.cert, env.agent.key
			return client.New(c)
		}},
	{name: "redis", label: oursRedis, conf: "a limit rule that every request takes (1,000,000/s per identity, never reached), its counts in a redis-server (-redis, over TCP on the load's core)",
		setup: setupRedis,
		args: func(env *gatewayEnv, _ []string) ([]string, error) {
			return configArgs(env, "redis-load.yaml", baseConfig(env)+"redis: redis://"+env.redisAddr+"\n"+limitRule)
		}},
}

// sharedCalls checks what redis-server ran between the commandstats before
// and after for n signed requests that each took a limit: one script call
// (EVALSHA: the nonce set and the token taken in one round trip) for each,
// and no SET of their own: commandstats counts the SET a script runs, one
// each, and the background probes' (one a second), no more.
func sharedCalls(before, after map[string]int, n int) (string, error) {
	scripts := after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"]
	sets := after["set"] - before["set"] - scripts
	if scripts < n || scripts > n+n/20+10 || sets > n/10 {
		return "", fmt.Errorf("redis-server ran %d scripts and %d SET besides theirs for %d signed requests, want one script each (nonce and limit in one round trip) and no SET but the probes'", scripts, sets, n)
	}
	return fmt.Sprintf("redis-server ran %d scripts (EVALSHA: a nonce and a limit in one round trip) and %d SET besides theirs (background probes) for the %d signed requests to the Redis server.", scripts, sets, n), nil
}

// configArgs writes a configuration file for ours and returns the
// arguments that run it.
func configArgs(env *gatewayEnv, name, conf string) ([]string, error) {
	f := filepath.Join(env.dir, name)
	if err := os.WriteFile(f, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return []string{"-config", f}, nil
}

// setupAgent makes an agent identity with gencert -agent (its URL the
// address its directory will listen on), starts that directory, and
// writes the list of trusted agents that names it.
func setupAgent(env *gatewayEnv) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	agentURL := "https://localhost:" + port
	dir := filepath.Join(env.dir, "agent")
	sign := filepath.Join(env.dir, "agent-sign.key")
	gencert := filepath.Join(filepath.Dir(env.serverBin), "gencert")
	if out, err := exec.Command(gencert, "-agent", agentURL, "-signature-key", sign, "-dir", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("gencert -agent: %v: %s", err, out)
	}
	env.agent.cert, env.agent.key = filepath.Join(dir, "agent.crt"), filepath.Join(dir, "agent.key")
	if _, err := startListening(false, env.serverBin, "-cert", env.pki.serverCert, "-key", env.pki.serverKey,
		"-signature-directory", sign+","+env.agent.key, "-listen-addr", addr); err != nil {
		return fmt.Errorf("the agent's directory: %w", err)
	}
	env.agent.list = filepath.Join(env.dir, "trusted-agents")
	return os.WriteFile(env.agent.list, []byte(agentURL+"\n"), 0o600)
}

// redisCalls returns INFO commandstats' calls per command of the
// redis-server at addr (lower-case names: "set", "evalsha").
func redisCalls(addr string) (map[string]int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("INFO commandstats\r\n")); err != nil {
		return nil, err
	}
	calls := map[string]int{}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if line == "" && len(calls) > 0 {
			break
		}
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":calls=")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		n, err := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("INFO commandstats: %q: %v", line, err)
		}
		calls[name] = n
	}
	return calls, sc.Err()
}

// setupRedis starts a redis-server on a free loopback port, keeping
// nothing on disk, and waits until it answers.
func setupRedis(env *gatewayEnv) error {
	bin := findPeer("redis-server", "")
	if bin == "" {
		return fmt.Errorf("redis-server is not installed (on Debian: apt-get install redis-server)")
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", env.dir)
	setDeathSignal(cmd, syscall.SIGKILL)
	if err := cmd.Start(); err != nil {
		return err
	}
	addStarted(&proc{cmd: cmd, addr: addr})
	for range 100 {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				env.redisAddr = addr
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not answer PING", addr)
}

// variantNames lists the variants' names.
func variantNames() string {
	var known []string
	for _, v := range loadVariants {
		known = append(known, v.name)
	}
	return strings.Join(known, ", ")
}

// findVariants returns the variants named, in order, or an error naming
// the unknown one and those there are.
func findVariants(names []string) ([]loadVariant, error) {
	var vs []loadVariant
	for _, n := range names {
		i := slices.IndexFunc(loadVariants, func(v loadVariant) bool { return v.name == n })
		if i < 0 {
			return nil, fmt.Errorf("load variant %q: not in this build (there are: %s)", n, variantNames())
		}
		vs = append(vs, loadVariants[i])
	}
	return vs, nil
}

// h2loadResult is what one h2load run reports.
type h2loadResult struct {
	done      int           // requests that succeeded with a 2xx
	elapsed   time.Duration // h2load's "finished in"
	latencies []time.Duration
}

// runH2load runs h2load with args against u, checks that every request
// succeeded with a 2xx, and returns its count and time; with a log file,
// the latency of each request too.
func runH2load(bin string, logFile string, args ...string) (h2loadResult, error) {
	if logFile != "" {
		os.Remove(logFile)
		args = append([]string{"--log-file", logFile}, args...)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return h2loadResult{}, fmt.Errorf("h2load %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	r, err := parseH2load(string(out))
	if err != nil {
		return r, fmt.Errorf("h2load %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	if logFile != "" {
		if r.latencies, err = readH2loadLog(logFile); err != nil {
			return r, err
		}
	}
	return r, nil
}

// parseH2load reads h2load's summary: the time it took and the requests
// that succeeded, all of them with a 2xx status.
func parseH2load(out string) (h2loadResult, error) {
	var r h2loadResult
	total, succeeded, ok2xx, other := -1, -1, -1, 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(strings.TrimSpace(line))
		switch {
		case len(f) >= 3 && f[0] == "finished" && f[1] == "in":
			d, err := time.ParseDuration(strings.TrimSuffix(f[2], ","))
			if err != nil {
				return r, fmt.Errorf("cannot read %q: %v", line, err)
			}
			r.elapsed = d
		case len(f) >= 9 && f[0] == "requests:":
			total, _ = strconv.Atoi(f[1])
			succeeded, _ = strconv.Atoi(f[7])
		case len(f) >= 9 && f[0] == "status" && f[1] == "codes:":
			ok2xx, _ = strconv.Atoi(f[2])
			for _, j := range []int{4, 6, 8} {
				n, _ := strconv.Atoi(f[j])
				other += n
			}
		}
	}
	if r.elapsed <= 0 || total < 0 || ok2xx < 0 {
		return r, fmt.Errorf("no summary in its output")
	}
	// In a timed run (-D), the status codes count the answers that came
	// after its end too.
	if succeeded != total || ok2xx < total || other > 0 || total == 0 {
		return r, fmt.Errorf("%d requests, %d succeeded, %d with a 2xx, %d with another status", total, succeeded, ok2xx, other)
	}
	r.done = total
	return r, nil
}

// readH2loadLog reads h2load's per-request log: start time (µs since the
// epoch), status, microseconds until the end of the response, one request
// a line, tab-separated.
func readH2loadLog(file string) ([]time.Duration, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lat []time.Duration
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		c := strings.Split(sc.Text(), "\t")
		if len(c) < 3 {
			continue
		}
		us, err := strconv.ParseInt(c[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("h2load log %q: line %q: %v", file, sc.Text(), err)
		}
		lat = append(lat, time.Duration(us)*time.Microsecond)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(lat) == 0 {
		return nil, fmt.Errorf("h2load log %q: no requests", file)
	}
	return lat, nil
}

// quantile returns the q-quantile of sorted durations (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// A rate is a measured throughput: per second of wall time, and per second
// of the terminator's CPU time.
type rate struct {
	wall, perCore float64
}

// A latencies is one fixed-load measurement.
type latencies struct {
	achieved       float64 // requests per second
	p50, p99, p999 time.Duration
	n              int
	cpuUse         float64 // the terminator's CPU time over wall time
}

func summarizeLatencies(lat []time.Duration, elapsed, cpu time.Duration) latencies {
	slices.Sort(lat)
	return latencies{achieved: float64(len(lat)) / elapsed.Seconds(), n: len(lat),
		p50: quantile(lat, 0.50), p99: quantile(lat, 0.99), p999: quantile(lat, 0.999),
		cpuUse: cpu.Seconds() / elapsed.Seconds()}
}

// loadRound is one terminator's measurements in one round.
type loadRound struct {
	keptAlive, newConns, flagged rate
	keptAliveUse                 float64 // CPU use at kept-alive saturation
	fixed                        []latencies
	oneAtATime                   latencies
}

// loadResults holds every round's measurements, by terminator.
type loadResults struct {
	ts        []*terminator
	targets   []float64 // the fixed rates, requests per second
	reference float64   // the saturation they are fractions of
	res       [][]loadRound
}

// sustained reports whether terminator i achieved fixed rate k (97 % of it
// or more, median of the rounds).
func (r *loadResults) sustained(i, k int) bool {
	return r.med(i, func(x loadRound) float64 { return x.fixed[k].achieved }) >= 0.97*r.targets[k]
}

// h2url is the URL h2load asks for.
func h2url(t *terminator) string { return t.url.String() }

// keptAliveSaturation runs h2load over kept-alive connections for the
// duration and returns its rate and the terminator's CPU use.
func keptAliveSaturation(t *terminator, lp loadParams) (rate, float64, error) {
	// Warm this load (the connections' buffers, the origin's pool).
	if _, err := runH2load(lp.h2load, "", "-c", strconv.Itoa(lp.clients), "-m", strconv.Itoa(lp.streams), "-n", "2000", h2url(t)); err != nil {
		return rate{}, 0, fmt.Errorf("%s: %w", t.name, err)
	}
	cpu0 := t.p.treeCPU()
	r, err := runH2load(lp.h2load, "", "-c", strconv.Itoa(lp.clients), "-m", strconv.Itoa(lp.streams),
		"-D", h2dur(lp.duration), h2url(t))
	cpu := t.p.treeCPU() - cpu0
	if err != nil {
		return rate{}, 0, fmt.Errorf("%s: %w", t.name, err)
	}
	return rate{wall: float64(r.done) / r.elapsed.Seconds(), perCore: float64(r.done) / cpu.Seconds()},
		cpu.Seconds() / r.elapsed.Seconds(), nil
}

// newConnSaturation runs h2load -c N -n N (each connection a full
// handshake and one request) again and again for the duration.
func newConnSaturation(t *terminator, lp loadParams) (rate, error) {
	n := strconv.Itoa(lp.newConns)
	var done int
	var elapsed time.Duration
	cpu0 := t.p.treeCPU()
	for start := time.Now(); time.Since(start) < lp.duration; {
		r, err := runH2load(lp.h2load, "", "-c", n, "-n", n, h2url(t))
		if err != nil {
			return rate{}, fmt.Errorf("%s: %w", t.name, err)
		}
		done += r.done
		elapsed += r.elapsed
	}
	time.Sleep(50 * time.Millisecond) // let the terminator finish closing
	cpu := t.p.treeCPU() - cpu0
	return rate{wall: float64(done) / elapsed.Seconds(), perCore: float64(done) / cpu.Seconds()}, nil
}

// flaggedSaturation sends new flagged connections with the bench's client,
// a certificate on each, lp.flagConc at a time.
func flaggedSaturation(t *terminator, cl *client.Client, lp loadParams) (rate, error) {
	var s gatewaySample
	if err := s.load(t, t.client(cl), true, lp.flagged, lp.flagConc); err != nil {
		return rate{}, err
	}
	return rate{wall: float64(s.n) / s.wall.Seconds(), perCore: float64(s.n) / s.cpu.Seconds()}, nil
}

// fixedRate runs h2load at target requests per second (spread over its
// clients) for the duration and returns the latencies it logged.
func fixedRate(t *terminator, lp loadParams, target float64, clients, streams int, d time.Duration, logFile string) (latencies, error) {
	perClient := max(int(target/float64(clients)+0.5), 1)
	cpu0 := t.p.treeCPU()
	r, err := runH2load(lp.h2load, logFile, "-c", strconv.Itoa(clients), "-m", strconv.Itoa(streams),
		"--rps", strconv.Itoa(perClient), "-D", h2dur(d), h2url(t))
	cpu := t.p.treeCPU() - cpu0
	if err != nil {
		return latencies{}, fmt.Errorf("%s: %w", t.name, err)
	}
	// The rate is counted from the log's lines: they must be h2load's
	// own count of the requests that succeeded.
	if len(r.latencies) != r.done {
		return latencies{}, fmt.Errorf("%s: h2load logged %d requests and counted %d", t.name, len(r.latencies), r.done)
	}
	return summarizeLatencies(r.latencies, r.elapsed, cpu), nil
}

// runLoad interleaves the terminators over the rounds, as runGateway does:
// started anew and warmed each round, each load taken by them in turn in
// an order rotated each round. The fixed rates are set from nginx's
// kept-alive saturation in the first round (ours', without nginx).
func runLoad(start func() ([]*terminator, error), p *benchPKI, lp loadParams, progress func(string)) (*loadResults, error) {
	cl, err := newGatewayClient(p)
	if err != nil {
		return nil, err
	}
	logFile := filepath.Join(os.TempDir(), fmt.Sprintf("req-mtls-bench-h2load-%d.log", os.Getpid()))
	defer os.Remove(logFile)
	say := func(format string, a ...any) {
		if progress != nil {
			progress(fmt.Sprintf(format, a...))
		}
	}
	r := &loadResults{}
	for round := range lp.rounds {
		ts, err := start()
		if err != nil {
			stopTerminators(ts)
			return nil, err
		}
		if r.ts == nil {
			r.ts, r.res = ts, make([][]loadRound, len(ts))
		} else if len(ts) != len(r.ts) {
			stopTerminators(ts)
			return nil, fmt.Errorf("round %d started %d terminators, the first %d", round+1, len(ts), len(r.ts))
		}
		fail := func(err error) (*loadResults, error) { stopTerminators(ts); return nil, err }
		rs := make([]loadRound, len(ts))
		order := func(k int) int { return (k + round) % len(ts) }
		for _, t := range ts {
			if _, err := warmUntilSettled(t.p, lp.warmMax, func() error {
				tc := t.client(cl)
				cn, err := tc.Dial(context.Background(), t.url)
				if err != nil {
					return err
				}
				defer cn.Close()
				return gatewayGet(context.Background(), tc, cn, t.url)
			}); err != nil {
				return fail(fmt.Errorf("%s: %w", t.name, err))
			}
		}
		for k := range ts {
			i := order(k)
			if rs[i].keptAlive, rs[i].keptAliveUse, err = keptAliveSaturation(ts[i], lp); err != nil {
				return fail(err)
			}
			say("load round %d, %s: kept alive %.0f requests/s, %.0f per core (CPU use %.2f)", round+1, ts[i].name, rs[i].keptAlive.wall, rs[i].keptAlive.perCore, rs[i].keptAliveUse)
		}
		for k := range ts {
			i := order(k)
			if rs[i].newConns, err = newConnSaturation(ts[i], lp); err != nil {
				return fail(err)
			}
			say("load round %d, %s: new connections (h2load) %.0f/s, %.0f per core", round+1, ts[i].name, rs[i].newConns.wall, rs[i].newConns.perCore)
		}
		for k := range ts {
			i := order(k)
			if rs[i].flagged, err = flaggedSaturation(ts[i], cl, lp); err != nil {
				return fail(err)
			}
			say("load round %d, %s: new flagged connections %.0f/s, %.0f per core", round+1, ts[i].name, rs[i].flagged.wall, rs[i].flagged.perCore)
		}
		if r.targets == nil {
			// The fixed rates are fractions of the reference's kept-alive
			// saturation (nginx's, else ours'): the median of this
			// round's and two more, so that one outlier does not set them.
			ref := 0
			for i, t := range ts {
				if t.name == "nginx" {
					ref = i
				}
			}
			walls := []float64{rs[ref].keptAlive.wall}
			for range 2 {
				x, _, err := keptAliveSaturation(ts[ref], lp)
				if err != nil {
					return fail(err)
				}
				walls = append(walls, x.wall)
			}
			r.reference = median(walls)
			say("load: %s's kept-alive saturation for the fixed rates: %.0f requests/s (the median of %.0f)", ts[ref].name, r.reference, walls)
			for _, f := range lp.fracs {
				r.targets = append(r.targets, f*r.reference)
			}
		}
		for _, target := range r.targets {
			for k := range ts {
				i := order(k)
				l, err := fixedRate(ts[i], lp, target, lp.clients, lp.streams, lp.duration, logFile)
				if err != nil {
					return fail(err)
				}
				rs[i].fixed = append(rs[i].fixed, l)
				say("load round %d, %s at %.0f requests/s: achieved %.0f, p50 %s, p99 %s, p99.9 %s", round+1, ts[i].name, target, l.achieved, us(l.p50), us(l.p99), us(l.p999))
			}
		}
		for k := range ts {
			i := order(k)
			d := time.Duration(float64(lp.idleN) / float64(lp.idleRate) * float64(time.Second))
			l, err := fixedRate(ts[i], lp, float64(lp.idleRate), 1, 1, d, logFile)
			if err != nil {
				return fail(err)
			}
			rs[i].oneAtATime = l
			say("load round %d, %s one at a time: p50 %s, p99 %s, p99.9 %s", round+1, ts[i].name, us(l.p50), us(l.p99), us(l.p999))
		}
		for i := range ts {
			r.res[i] = append(r.res[i], rs[i])
		}
		stopTerminators(ts)
		say("load round %d/%d done", round+1, lp.rounds)
	}
	return r, nil
}

// h2dur is a duration as h2load reads it.
func h2dur(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/1e3) }

// med returns the median over rounds of what f reads from terminator i's.
func (r *loadResults) med(i int, f func(loadRound) float64) float64 {
	var v []float64
	for _, x := range r.res[i] {
		v = append(v, f(x))
	}
	return median(v)
}

// ratio returns the median over rounds of f(ours) ÷ f(terminator i), taken
// within each round.
func (r *loadResults) ratio(i int, f func(loadRound) float64) float64 {
	var v []float64
	for k := range r.res[i] {
		v = append(v, f(r.res[0][k])/f(r.res[i][k]))
	}
	return median(v)
}

// rel returns the median over rounds of f(terminator i) ÷ f(ours), taken
// within each round, and the lowest and highest of those ratios.
func (r *loadResults) rel(i int, f func(loadRound) float64) (med, lo, hi float64) {
	var v []float64
	for k := range r.res[i] {
		v = append(v, f(r.res[i][k])/f(r.res[0][k]))
	}
	return median(v), slices.Min(v), slices.Max(v)
}

// diff returns the median over rounds of f(ours) − f(terminator i).
func (r *loadResults) diff(i int, f func(loadRound) float64) float64 {
	var v []float64
	for k := range r.res[i] {
		v = append(v, f(r.res[0][k])-f(r.res[i][k]))
	}
	return median(v)
}

func (r *loadResults) index(name string) int {
	return slices.IndexFunc(r.ts, func(t *terminator) bool { return t.name == name })
}

var (
	keptAlivePerCore = func(x loadRound) float64 { return x.keptAlive.perCore }
	newConnsPerCore  = func(x loadRound) float64 { return x.newConns.perCore }
	flaggedPerCore   = func(x loadRound) float64 { return x.flagged.perCore }
	oneP50           = func(x loadRound) float64 { return float64(x.oneAtATime.p50) }
)

func fixedP(k int, p func(latencies) time.Duration) func(loadRound) float64 {
	return func(x loadRound) float64 { return float64(p(x.fixed[k])) }
}

// markdown is the comparison's tables, what each terminator does and which
// were skipped.
func (r *loadResults) markdown(lp loadParams, skipped []string) string {
	var md strings.Builder
	pinned := ""
	if serverCPU != "" {
		pinned = fmt.Sprintf("; terminators pinned to CPU %s, h2load, the bench's client and the origin on the other", serverCPU)
	}
	fmt.Fprintf(&md, "Saturation: the terminators of the gateway comparison under h2load and the bench's client; median of %d interleaved rounds (the terminators started anew and warmed each round); per second of wall time and per second of the terminator's own CPU time (per core); kept alive: h2load -c %d -m %d for %s; new connections: h2load -c %d -n %d (one request on each, unflagged, no client certificate) again and again for %s; new flagged connections: the bench's client, flag 80 and a certificate, %d a time, %d per round; TLS 1.3, X25519, ECDSA P-256; %d cores%s:\n\n",
		lp.rounds, lp.clients, lp.streams, lp.duration, lp.newConns, lp.newConns, lp.duration, lp.flagConc, lp.flagged, numCPU(), pinned)
	md.WriteString("| terminator | kept-alive HTTP/2 requests/s | per core | CPU use | new connections/s (h2load) | per core | new flagged connections/s | per core |\n|---|---|---|---|---|---|---|---|\n")
	for i, t := range r.ts {
		fmt.Fprintf(&md, "| %s | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f | %.0f |\n", t.name,
			r.med(i, func(x loadRound) float64 { return x.keptAlive.wall }), r.med(i, keptAlivePerCore),
			r.med(i, func(x loadRound) float64 { return x.keptAliveUse }),
			r.med(i, func(x loadRound) float64 { return x.newConns.wall }), r.med(i, newConnsPerCore),
			r.med(i, func(x loadRound) float64 { return x.flagged.wall }), r.med(i, flaggedPerCore))
	}
	ref := "nginx's"
	if r.index("nginx") < 0 {
		ref = "ours'"
	}
	fmt.Fprintf(&md, "\nLatency at fixed rates: h2load -c %d -m %d --rps for %s at %s (%.0f, %.0f and %.0f %% of %s kept-alive saturation, %.0f requests/s: the median of three runs in the first round; a rate whose achieved requests/s fall under 97 %% of it is marked not sustained: its latencies are those of a server past its saturation, with at most %d requests waiting), and one request at a time (h2load -c 1 -m 1 --rps %d: %d requests, each on a kept-alive connection idle since the last answer); from h2load's per-request log (--log-file), from sending the request to the end of the response; median of %d rounds:\n\n",
		lp.clients, lp.streams, lp.duration, r.targetList(), lp.fracs[0]*100, lp.fracs[1]*100, lp.fracs[2]*100, ref, r.reference, lp.clients*lp.streams, lp.idleRate, lp.idleN, lp.rounds)
	md.WriteString("| terminator | load | requests/s | CPU use | p50 | p99 | p99.9 |\n|---|---|---|---|---|---|---|\n")
	for i, t := range r.ts {
		for k, f := range lp.fracs {
			note := ""
			if !r.sustained(i, k) {
				note = ", not sustained"
			}
			fmt.Fprintf(&md, "| %s | %.0f %% (%.0f/s%s) | %.0f | %.2f | %s | %s | %s |\n", t.name, f*100, r.targets[k], note,
				r.med(i, func(x loadRound) float64 { return x.fixed[k].achieved }),
				r.med(i, func(x loadRound) float64 { return x.fixed[k].cpuUse }),
				us(time.Duration(r.med(i, fixedP(k, func(l latencies) time.Duration { return l.p50 })))),
				us(time.Duration(r.med(i, fixedP(k, func(l latencies) time.Duration { return l.p99 })))),
				us(time.Duration(r.med(i, fixedP(k, func(l latencies) time.Duration { return l.p999 })))))
		}
		one := func(p func(latencies) time.Duration) string {
			return us(time.Duration(r.med(i, func(x loadRound) float64 { return float64(p(x.oneAtATime)) })))
		}
		fmt.Fprintf(&md, "| %s | one at a time | %.0f | %.2f | %s | %s | %s |\n", t.name,
			r.med(i, func(x loadRound) float64 { return x.oneAtATime.achieved }),
			r.med(i, func(x loadRound) float64 { return x.oneAtATime.cpuUse }),
			one(func(l latencies) time.Duration { return l.p50 }), one(func(l latencies) time.Duration { return l.p99 }),
			one(func(l latencies) time.Duration { return l.p999 }))
	}
	md.WriteString("\n")
	for _, t := range r.ts {
		fmt.Fprintf(&md, "- %s: %s\n", t.name, t.conf)
	}
	for _, s := range skipped {
		fmt.Fprintf(&md, "- %s\n", s)
	}
	return md.String()
}

func (r *loadResults) targetList() string {
	var s []string
	for _, t := range r.targets {
		s = append(s, fmt.Sprintf("%.0f", t))
	}
	return strings.Join(s, ", ") + " requests/s"
}

// goals returns the comparison against its targets, from the ratios of
// this run (median of per-round ratios): kept-alive requests per second
// per core at least 0.8 times nginx's and 2 times Caddy's; new flagged
// connections per second per core at least 1.4 times nginx's; p99 at 50 %
// of nginx's saturation at most 1.5 times nginx's; one request at a time,
// p50 at most nginx's + 50 µs. The peers' configurations that verify the
// client certificate (as ours does) are the ones held to them.
func (r *loadResults) goals(lp loadParams) string {
	var b strings.Builder
	ng, cd := r.index("nginx"), r.index("Caddy")
	half := slices.Index(lp.fracs, 0.5)
	if ng > 0 {
		got := r.ratio(ng, keptAlivePerCore)
		fmt.Fprintf(&b, "- kept-alive HTTP/2 requests/s per core, ours ÷ nginx: %.2f, goal at least 0.8: %s\n", got, atLeast(got, 0.8))
	}
	if cd > 0 {
		got := r.ratio(cd, keptAlivePerCore)
		fmt.Fprintf(&b, "- kept-alive HTTP/2 requests/s per core, ours ÷ Caddy: %.2f, goal at least 2: %s\n", got, atLeast(got, 2))
	}
	if ng > 0 {
		got := r.ratio(ng, flaggedPerCore)
		fmt.Fprintf(&b, "- new flagged connections/s per core, ours ÷ nginx: %.2f, goal at least 1.4: %s\n", got, atLeast(got, 1.4))
		if half >= 0 {
			got := r.ratio(ng, fixedP(half, func(l latencies) time.Duration { return l.p99 }))
			switch {
			case !r.sustained(0, half):
				fmt.Fprintf(&b, "- p99 at 50 %% of nginx's saturation, ours ÷ nginx: %.2f, goal at most 1.5: missed (ours did not sustain the rate: %.0f of %.0f requests/s)\n",
					got, r.med(0, func(x loadRound) float64 { return x.fixed[half].achieved }), r.targets[half])
			case !r.sustained(ng, half):
				fmt.Fprintf(&b, "- p99 at 50 %% of nginx's saturation, ours ÷ nginx: %.2f, goal at most 1.5: not judged (nginx did not sustain the rate)\n", got)
			default:
				fmt.Fprintf(&b, "- p99 at 50 %% of nginx's saturation, ours ÷ nginx: %.2f, goal at most 1.5: %s\n", got, verdict(got, 1.5))
			}
		}
		d := time.Duration(r.diff(ng, oneP50))
		fmt.Fprintf(&b, "- one request at a time, p50, ours − nginx: %s, goal at most 50 µs: %s\n", us(d), verdict(float64(d), float64(50*time.Microsecond)))
	}
	for i, t := range r.ts {
		if i > 0 && strings.HasPrefix(t.name, "ours") {
			ka, kaLo, kaHi := r.rel(i, keptAlivePerCore)
			fl, flLo, flHi := r.rel(i, flaggedPerCore)
			fmt.Fprintf(&b, "- %s ÷ ours: kept-alive requests/s per core %.3f (%.2f to %.2f by round), new flagged connections/s per core %.3f (%.2f to %.2f)\n",
				t.name, ka, kaLo, kaHi, fl, flLo, flHi)
		}
	}
	return b.String()
}

func atLeast(got, limit float64) string {
	if got < limit {
		return "missed"
	}
	return "met"
}

// bars are the saturation chart's: rates per core by load.
func (r *loadResults) bars() []bar {
	var bars []bar
	for _, l := range []struct {
		label string
		f     func(loadRound) float64
	}{
		{"kept-alive HTTP/2 requests/s per core (h2load)", keptAlivePerCore},
		{"new connections/s per core (h2load, unflagged)", newConnsPerCore},
		{"new flagged connections/s per core (flag 80 + certificate)", flaggedPerCore},
	} {
		for i, t := range r.ts {
			bars = append(bars, bar{group: l.label, label: t.name, value: r.med(i, l.f)})
		}
	}
	return bars
}

// latencyBars are the latency chart's: p99 at each fixed rate, p50 one at
// a time.
func (r *loadResults) latencyBars(lp loadParams) []bar {
	var bars []bar
	for k, f := range lp.fracs {
		for i, t := range r.ts {
			bars = append(bars, bar{group: fmt.Sprintf("p99 at %.0f %% of nginx's saturation (%.0f requests/s)", f*100, r.targets[k]), label: t.name,
				value: r.med(i, fixedP(k, func(l latencies) time.Duration { return l.p99 })) / 1e3})
		}
	}
	for i, t := range r.ts {
		bars = append(bars, bar{group: "p50, one request at a time", label: t.name, value: r.med(i, oneP50) / 1e3})
	}
	return bars
}

// loadBench runs the load comparison: the origin on the load's CPU, the
// terminators on the server CPU. It returns the Markdown and the two
// charts' bars.
func loadBench(dir, binDir string, lp loadParams, nginxFlag, caddyFlag, baseline string, prof profileParams) (string, []bar, []bar) {
	defer stopAll()
	lp.h2load = findPeer("h2load", lp.h2load)
	if lp.h2load == "" {
		fatalf("h2load is not installed: the load comparison needs it (on Debian: apt-get install nghttp2-client)")
	}
	vs, err := findVariants(lp.variants)
	check(err)
	env := &gatewayEnv{dir: dir, pki: makePKI(dir, "load", false), origin: startOrigin(),
		serverBin: filepath.Join(binDir, "server"), nginx: findPeer("nginx", nginxFlag), caddy: findPeer("caddy", caddyFlag),
		baseline: baseline, verifyingOnly: true, variants: vs}
	for _, v := range vs {
		if v.setup != nil {
			if err := v.setup(env); err != nil {
				fatalf("load variant %s: %v", v.name, err)
			}
		}
	}
	skipped, start := peerSkips(env), starter(env, "load")
	res, err := runLoad(start, env.pki, lp, func(s string) { log.Print(s) })
	check(err)
	md := res.markdown(lp, skipped)
	if g := res.goals(lp); g != "" {
		md += "\nGoals (ratios of this run, median per round):\n\n" + g
	}
	redisVariant := slices.ContainsFunc(vs, func(v loadVariant) bool { return v.name == "redis" })
	if redisVariant {
		// The Redis variant falls back to its own buckets when Redis is
		// slow: the run counts only if its limits went to Redis.
		calls, err := redisCalls(env.redisAddr)
		check(err)
		if calls["evalsha"] == 0 {
			fatalf("load: the Redis variant sent no limit to redis-server (INFO commandstats: %v)", calls)
		}
		md += fmt.Sprintf("\nredis-server ran %d EVALSHA (the Redis variant's limits) in the load.\n", calls["evalsha"])
	}
	fmt.Print("\n" + md)
	if prof.file != "" {
		check(profileOursH2load(env, lp, prof))
	}
	return md, res.bars(), res.latencyBars(lp)
}

// sharedBench runs the shared-state comparison (own store against Redis),
// the origin on the load's CPU, and returns its Markdown.
func sharedBench(dir, binDir string, sp sharedParams, prof profileParams) string {
	defer stopAll()
	env := &gatewayEnv{dir: dir, pki: makePKI(dir, "shared", false), origin: startOrigin(),
		serverBin: filepath.Join(binDir, "server"), verifyingOnly: true}
	check(setupRedis(env))
	if prof.file != "" {
		check(profileShared(env, sp, prof))
		return ""
	}
	before, err := redisCalls(env.redisAddr)
	check(err)
	sr, err := runShared(env, sp, func(s string) { log.Print(s) })
	check(err)
	md := sr.markdown(sp)
	calls, err := redisCalls(env.redisAddr)
	check(err)
	line, err := sharedCalls(before, calls, sr.requests())
	if err != nil {
		fatalf("shared state: %v", err)
	}
	md += "\n" + line + "\n"
	fmt.Print("\n" + md)
	return md
}

// profileOursH2load runs this server as the gateway once more, with pprof
// on, and writes a CPU profile taken under h2load's kept-alive load (-c
// and -m as the saturation's), or its new connections with
// -profile-new-conns.
func profileOursH2load(env *gatewayEnv, lp loadParams, prof profileParams) error {
	t, pa, err := startProfiled(env, prof.accessLog)
	if err != nil {
		return err
	}
	defer t.p.stop()
	args := []string{"-c", strconv.Itoa(lp.clients), "-m", strconv.Itoa(lp.streams), "-n", "20000", h2url(t)}
	what := "kept-alive"
	if !prof.keepAlive {
		n := strconv.Itoa(lp.newConns)
		args, what = []string{"-c", n, "-n", n, h2url(t)}, "new-connection"
	}
	log.Printf("profiling ours under h2load's %s load for %v (access log %v)", what, prof.d, prof.accessLog)
	return profileWhile(pa, prof.file, prof.d, env.serverBin, "requests", func() (int, error) {
		r, err := runH2load(lp.h2load, "", args...)
		return r.done, err
	})
}
