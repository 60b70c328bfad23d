package main

// The price of the fleet's shared state, in the load part's run: ours
// verifying a Web Bot Auth signature (a nonce each) and taking a limit on
// every request, over one kept-alive HTTP/2 connection, with its own nonce
// store and buckets against the same with both in a redis-server (the
// redis variant's, on the load's core). The bench's client signs each
// request (Ed25519) and presents its certificate; every answer is checked
// to say the signature verified.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log"
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

// sharedParams sizes the shared-state comparison.
type sharedParams struct {
	rounds int
	n      int // signed requests per server, per round and concurrency
	// chunks splits each round's n requests into loads of n/chunks that
	// alternate between the two servers, so that both meet the machine
	// in the same state (a shared VM's speed drifts over seconds).
	chunks  int
	concs   []int // requests at a time
	warmMax int   // at most so many requests warm a server (warmUntilSettled)
	// floorN PINGs measure a bare round trip to Redis each round
	// (redisFloor); 0: not measured.
	floorN int
}

// loads is how many loads each round's n requests per server come in:
// chunks, at least one and at most n.
func (sp sharedParams) loads() int { return max(1, min(sp.chunks, sp.n)) }

// sharedAgent is the signing bot's agent URL, listed with a local JWKS.
const sharedAgent = "https://bot.example"

// limitRule is the limit every request takes in the Redis variant and the
// shared-state comparison: high enough never to be reached.
const limitRule = "rules:\n  - name: everyone\n    action: limit\n    rate: 1000000/s\n    burst: 1000000\n"

// sharedResults holds, per server, concurrency and round, the CPU per
// request and the median latency.
type sharedResults struct {
	ts  []*terminator
	res [][][]gatewayResult // [server][concurrency][round]
	// sent counts the signed requests sent to each server, warm-ups
	// included.
	sent []int
	// floor is each round's bare round trip to Redis (redisFloor).
	floor []time.Duration
}

// requests is how many signed requests the Redis server was sent.
func (r *sharedResults) requests() int { return r.sent[1] }

// setupSigner makes the signing key, its JWKS and the agents file that
// lists it, and returns the client that signs with it.
func setupSigner(env *gatewayEnv) (string, *client.Client, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, err
	}
	jwks := filepath.Join(env.dir, "bot.jwks")
	if err := os.WriteFile(jwks, fmt.Appendf(nil, `{"keys":[{"kty":"OKP","crv":"Ed25519","x":%q}]}`,
		base64.RawURLEncoding.EncodeToString(pub)), 0o600); err != nil {
		return "", nil, err
	}
	agents := filepath.Join(env.dir, "signing-agents")
	if err := os.WriteFile(agents, []byte(sharedAgent+" "+jwks+"\n"), 0o600); err != nil {
		return "", nil, err
	}
	c := gatewayClientConfig(env.pki)
	c.Signing = &client.Signing{Key: key, Agent: sharedAgent}
	cl, err := client.New(c)
	return agents, cl, err
}

// startShared starts the two servers: own store, then Redis; with
// pprofAddrs, each serves pprof on its address.
func startShared(env *gatewayEnv, agents string, pprofAddrs ...string) ([]*terminator, error) {
	var ts []*terminator
	for _, s := range []struct{ name, file, extra string }{
		{"ours, own store", "shared-own.yaml", ""},
		{"ours, Redis", "shared-redis.yaml", "redis: redis://" + env.redisAddr + "\n"},
	} {
		if len(pprofAddrs) > len(ts) {
			s.extra += "pprof_addr: " + pprofAddrs[len(ts)] + "\n"
		}
		args, err := configArgs(env, s.file, baseConfig(env)+"signature_agents: "+agents+"\n"+s.extra+limitRule)
		if err != nil {
			return ts, err
		}
		p, err := startListening(true, env.serverBin, args...)
		if err != nil {
			return ts, fmt.Errorf("%s: %w", s.name, err)
		}
		ts = append(ts, &terminator{name: s.name, p: p, url: siteURL(p.addr), signed: true})
	}
	return ts, nil
}

// runShared measures the two servers over the rounds, interleaved as the
// other parts are (started anew each round, the order rotated), and within
// a round in alternating chunks.
func runShared(env *gatewayEnv, sp sharedParams, progress func(string)) (*sharedResults, error) {
	if env.redisAddr == "" {
		if err := setupRedis(env); err != nil {
			return nil, err
		}
	}
	agents, cl, err := setupSigner(env)
	if err != nil {
		return nil, err
	}
	r := &sharedResults{}
	for round := range sp.rounds {
		ts, err := startShared(env, agents)
		if err != nil {
			stopTerminators(ts)
			return nil, err
		}
		if r.ts == nil {
			r.ts, r.res, r.sent = ts, make([][][]gatewayResult, len(ts)), make([]int, len(ts))
			for i := range ts {
				r.res[i] = make([][]gatewayResult, len(sp.concs))
			}
		}
		for i, t := range ts {
			w, err := warmUntilSettled(t.p, sp.warmMax, func() error {
				cn, err := cl.Dial(context.Background(), t.url)
				if err != nil {
					return err
				}
				defer cn.Close()
				return gatewayGetSigned(context.Background(), cl, cn, t.url, true)
			})
			if err != nil {
				stopTerminators(ts)
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			r.sent[i] += w.calls
		}
		chunks := sp.loads()
		for ci, conc := range sp.concs {
			samples := make([]gatewaySample, len(ts))
			for c := range chunks {
				n := sp.n / chunks
				if c < sp.n%chunks {
					n++
				}
				for k := range ts {
					i := (k + round + c) % len(ts)
					if err := samples[i].load(ts[i], cl, false, n, conc); err != nil {
						stopTerminators(ts)
						return nil, err
					}
					r.sent[i] += n + max(5, n/50) // gatewaySample.load's warm-up and its load
				}
			}
			for i, s := range samples {
				g := s.result()
				r.res[i][ci] = append(r.res[i][ci], g)
				if progress != nil {
					progress(fmt.Sprintf("shared state round %d, %s, %d at a time: %.0f µs CPU per request, p50 %s", round+1, ts[i].name, conc, g.cpuUS, us(g.p50)))
				}
			}
		}
		if sp.floorN > 0 {
			f, err := redisFloor(env, sp.floorN)
			if err != nil {
				stopTerminators(ts)
				return nil, err
			}
			r.floor = append(r.floor, f)
			if progress != nil {
				progress(fmt.Sprintf("shared state round %d: a bare round trip to Redis (PING on a blocking socket) cost its client %.1f µs CPU", round+1, float64(f)/1e3))
			}
		}
		stopTerminators(ts)
	}
	return r, nil
}

// ratios returns, per concurrency, the medians over the rounds of Redis's
// CPU per request over the own store's and of the difference of their
// p50s.
func (r *sharedResults) ratios() (cpu []float64, p50 []time.Duration) {
	for ci := range r.res[0] {
		var rs, ds []float64
		for k := range r.res[0][ci] {
			own, red := r.res[0][ci][k], r.res[1][ci][k]
			rs = append(rs, red.cpuUS/own.cpuUS)
			ds = append(ds, float64(red.p50-own.p50))
		}
		cpu, p50 = append(cpu, median(rs)), append(p50, time.Duration(median(ds)))
	}
	return cpu, p50
}

// markdown is the comparison's table and its goals: at most +20 % CPU per
// request and +0.3 ms at the median with Redis.
func (r *sharedResults) markdown(sp sharedParams) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Shared state: ours verifying a Web Bot Auth signature (Ed25519, a nonce each, signed by the bench's client) and taking a limit rule (1,000,000/s, never reached) on every request, over one kept-alive HTTP/2 connection (the gateway part's kept-alive load is 2 at a time), %d requests per round in %d loads alternating between the two servers, with its own nonce store and buckets, or with both in a redis-server on the load's core (TCP over loopback); median of %d interleaved rounds:\n\n", sp.n, sp.loads(), sp.rounds)
	b.WriteString("| requests at a time | own store: CPU per request | p50 | Redis: CPU per request | p50 | Redis ÷ own, CPU | Redis − own, p50 |\n|---|---|---|---|---|---|---|\n")
	cpu, p50 := r.ratios()
	med := func(i, ci int, f func(gatewayResult) float64) float64 {
		var v []float64
		for _, g := range r.res[i][ci] {
			v = append(v, f(g))
		}
		return median(v)
	}
	cpuOf := func(g gatewayResult) float64 { return g.cpuUS }
	p50Of := func(g gatewayResult) float64 { return float64(g.p50) }
	for ci, conc := range sp.concs {
		fmt.Fprintf(&b, "| %d | %.0f µs | %s | %.0f µs | %s | %.3f | %+d µs |\n", conc,
			med(0, ci, cpuOf), us(time.Duration(med(0, ci, p50Of))), med(1, ci, cpuOf), us(time.Duration(med(1, ci, p50Of))),
			cpu[ci], p50[ci].Microseconds())
	}
	if len(r.floor) > 0 {
		fl := make([]float64, len(r.floor))
		for i, f := range r.floor {
			fl[i] = float64(f) / 1e3
		}
		fmt.Fprintf(&b, "\nThe least a Redis call on loopback costs a client here: a bare round trip to this redis-server, one at a time from the servers' CPU (a blocking socket, a write and a read a PING, %d PINGs a round), cost %.1f µs of CPU (median per round).", sp.floorN, median(fl))
		if one := slices.Index(sp.concs, 1); one >= 0 {
			// The Redis server's CPU per request over the own store's,
			// one at a time, median of the rounds' differences.
			var extra []float64
			for round := range r.res[0][one] {
				extra = append(extra, r.res[1][one][round].cpuUS-r.res[0][one][round].cpuUS)
			}
			fmt.Fprintf(&b, " Ours with Redis spent %.1f µs more per request than with its own store one at a time (median of the rounds' differences).", median(extra))
		}
		b.WriteString("\n")
	}
	b.WriteString("\nGoals (Redis against the own store, median per round):\n\n")
	for ci, conc := range sp.concs {
		fmt.Fprintf(&b, "- %d at a time, CPU per request: %+.1f %%, goal at most +20 %%: %s\n", conc, (cpu[ci]-1)*100, verdict(cpu[ci], 1.2))
		fmt.Fprintf(&b, "- %d at a time, p50: %+d µs, goal at most +300 µs: %s\n", conc, p50[ci].Microseconds(), verdict(float64(p50[ci].Microseconds()), 300))
	}
	return b.String()
}

// profileShared writes CPU profiles of the two servers, each taken while
// it serves signed requests one at a time over one kept-alive connection:
// the Redis server's to file, the own store's to file+".own" (to compare:
// go tool pprof -diff_base file.own bin/server file).
func profileShared(env *gatewayEnv, sp sharedParams, prof profileParams) error {
	agents, cl, err := setupSigner(env)
	if err != nil {
		return err
	}
	pas := make([]string, 2)
	for i := range pas {
		if pas[i], err = freeAddr(); err != nil {
			return err
		}
	}
	ts, err := startShared(env, agents, pas...)
	defer stopTerminators(ts)
	if err != nil {
		return err
	}
	for i, file := range []string{prof.file + ".own", prof.file} {
		log.Printf("profiling %s, signed requests one at a time, for %v", ts[i].name, prof.d)
		err := profileWhile(pas[i], file, prof.d, env.serverBin, "requests", func() (int, error) {
			var s gatewaySample
			return sp.n, s.load(ts[i], cl, false, sp.n, 1)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// redisFloor is what a bare round trip to the bench's redis-server costs a
// client alone on the servers' CPU, one at a time: this program's
// ping-redis (pingRedis: a blocking socket, a raw write and read a PING)
// sending n PINGs, its CPU time per PING. It is the least a Redis call on
// loopback costs a client on this machine: one write that also runs the
// server's side of TCP and wakes it, one wait, one read.
func redisFloor(env *gatewayEnv, n int) (time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	name, args := onServerCPU(self, "ping-redis", env.redisAddr, strconv.Itoa(n))
	cmd := exec.Command(name, args...)
	setDeathSignal(cmd, syscall.SIGKILL)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return 0, fmt.Errorf("bench ping-redis: %v: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return 0, fmt.Errorf("bench ping-redis: %v", err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bench ping-redis: %q", out)
	}
	return time.Duration(ns), nil
}
