// Command bench measures what request mTLS costs a server, on loopback, in
// one run: server CPU per full TLS 1.3 handshake (from the server process's
// own CPU time) for this project's server and for a stock crypto/tls server
// without the inspection layer, with ECDSA P-256 and RSA-2048 certificates
// and X25519 and X25519MLKEM768 key shares; then requests per second and
// latency of GET /debug. Configurations are interleaved (A B A B ...) over
// several rounds and medians reported. It writes a Markdown table and an
// SVG bar chart into -out (bin/assets unless given; make bench OUT=assets
// replaces the committed ones).
//
//	go run ./tools/bench -bin bin -out bin/assets
//
// It also serves as the stock server it compares against:
//
//	bench serve-stock -mode always|never -cert F -key F -ca F -addr A
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/server"
	"github.com/req-mtls/req-mtls/internal/tlsclient"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	if subcommand(os.Args[1:]) {
		return
	}
	binDir := flag.String("bin", "bin", "directory with the server binary")
	outDir := flag.String("out", filepath.Join("bin", "assets"), "where to write bench.md, bench.svg and bench-gateway.svg")
	only := flag.String("only", "", "run one part only: handshake (CPU per handshake, GET /debug throughput), gateway (the TLS terminator comparison; bench.md keeps the other part's last results), load (the terminators under h2load: saturation and latency at fixed rates, in bench-load.md), shared (the fleet's shared state: signed requests with a limit, own store against Redis, in bench-shared.md), memory (memory per open connection against nginx and Caddy, in bench-memory.md) or forward (the forward proxy against mitmproxy, in bench-forward.md)")
	rounds := flag.Int("rounds", 5, "interleaved rounds")
	handshakes := flag.Int("handshakes", 500, "handshakes per configuration per round")
	requests := flag.Int("requests", 2000, "requests per throughput measurement")
	fwdOne := flag.Int("forward-requests", 1000, "forward: requests over one tunnel per proxy per round")
	fwdNew := flag.Int("forward-tunnels", 200, "forward: requests with a new tunnel each per proxy per round")
	var mp memoryParams
	flag.IntVar(&mp.idle, "memory-idle", 10000, "memory: idle HTTP/2 connections held open at once")
	flag.IntVar(&mp.half, "memory-half", 1000, "memory: half-sent ClientHellos held open at once (this server holds at most -max-handshakes, 1024 by default)")
	heapProfile := flag.String("heap-profile", "", "memory: also write a heap profile of this server with its idle connections open to this file")
	var gp gatewayParams
	flag.IntVar(&gp.newConnN, "gateway-requests", 1000, "gateway: requests on new connections per terminator per round")
	flag.IntVar(&gp.newConnConc, "gateway-conc", 2, "gateway: new connections at a time")
	flag.IntVar(&gp.keepAliveN, "gateway-keepalive-requests", 10000, "gateway: requests on the kept-alive connection per terminator per round")
	flag.IntVar(&gp.keepAliveConc, "gateway-keepalive-conc", 2, "gateway: requests at a time on the kept-alive connection")
	var lp loadParams
	flag.StringVar(&lp.h2load, "h2load", "", "load: the h2load binary (default: h2load from PATH)")
	flag.DurationVar(&lp.duration, "load-time", 3*time.Second, "load: how long each saturation and fixed-rate measurement lasts")
	flag.IntVar(&lp.clients, "load-clients", 10, "load: h2load -c, kept alive and at fixed rates")
	flag.IntVar(&lp.streams, "load-streams", 10, "load: h2load -m, streams at a time per connection")
	flag.IntVar(&lp.newConns, "load-new-conns", 100, "load: h2load -c N -n N, new connections per h2load run")
	flag.IntVar(&lp.flagged, "load-flagged", 2000, "load: new flagged connections per terminator per round (the bench's client)")
	flag.IntVar(&lp.flagConc, "load-flagged-conc", 8, "load: new flagged connections at a time")
	flag.IntVar(&lp.idleRate, "load-idle-rate", 200, "load: requests per second, one at a time on a kept-alive connection")
	flag.IntVar(&lp.idleN, "load-idle-requests", 1000, "load: requests one at a time per terminator per round")
	var sp sharedParams
	flag.IntVar(&sp.n, "shared-requests", 4000, "shared: signed requests per server, round and concurrency in the shared-state comparison (own store against Redis)")
	flag.IntVar(&sp.chunks, "shared-chunks", 8, "shared: each round's requests in so many loads, alternating between the two servers")
	loadVariantList := flag.String("load-variants", "access-log,rules,agent,redis", "load: this server again with these on, comma-separated ("+variantNames()+"; \"\" for none)")
	nginxBin := flag.String("nginx", "", "gateway: the nginx binary (default: nginx from PATH or /usr/sbin)")
	caddyBin := flag.String("caddy", "", "gateway: the caddy binary (default: caddy from PATH)")
	baseline := flag.String("baseline", "", "gateway: also run this server binary (an earlier build) as \"ours, baseline\", to price a change in the same interleaved run")
	hsProfile := flag.String("profile-handshakes", "", "write a CPU profile of this server under flagged handshakes (ECDSA P-256, X25519) to this file, for -profile-time, and do nothing else")
	hsProfileStock := flag.Bool("profile-handshakes-stock", false, "-profile-handshakes profiles the stock crypto/tls server that always requests a certificate instead")
	warmMax := flag.Int("warm-max", 2000, "handshake, gateway: at most so many handshakes or requests warm a server started for a round, until a batch of 50 takes fewer than one page fault each")
	var prof profileParams
	flag.StringVar(&prof.file, "profile", "", "gateway, load: also write a CPU profile of this server under the new-connection load (with -only load: h2load's) to this file; with -only shared, only profiles: the Redis server's signed requests one at a time to this file, the own store's to this file with .own added")
	flag.DurationVar(&prof.d, "profile-time", 10*time.Second, "gateway: how long -profile samples")
	flag.BoolVar(&prof.keepAlive, "profile-keepalive", false, "gateway, load: -profile samples the kept-alive load instead")
	flag.BoolVar(&prof.accessLog, "profile-access-log", false, "gateway, load: -profile samples the server with its access log on")
	flag.StringVar(&serverCPU, "server-cpu", "", "run the servers on this CPU (taskset -c), apart from the load")
	flag.Parse()
	if *only != "" && *only != "handshake" && *only != "gateway" && *only != "load" && *only != "shared" && *only != "memory" && *only != "forward" {
		log.Fatalf("-only must be handshake, gateway, load, shared, memory or forward, not %q", *only)
	}
	gp.rounds = *rounds
	gp.warmMax = *warmMax
	lp.rounds, lp.warmMax, lp.fracs = *rounds, *warmMax, []float64{0.25, 0.5, 0.75}
	sp.rounds, sp.concs, sp.warmMax, sp.floorN = *rounds, []int{1, 2, 4, 32}, *warmMax, 10000
	if *loadVariantList != "" {
		lp.variants = strings.Split(*loadVariantList, ",")
	}
	if _, err := findVariants(lp.variants); err != nil {
		log.Fatalf("-load-variants: %v", err)
	}

	dir, err := os.MkdirTemp("", "req-mtls-bench")
	check(err)
	scratchDir = dir
	defer cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		log.Printf("%v: stopping the servers", s)
		cleanup()
		os.Exit(1)
	}()

	if *hsProfile != "" {
		// Only the profile: this server, ECDSA P-256, X25519, flagged.
		check(profileHandshakes(dir, *binDir, *hsProfile, prof.d, *hsProfileStock))
		return
	}
	if *only == "" || *only == "forward" {
		// The forward-proxy comparison has a file of its own.
		md := forwardBench(dir, *binDir, *rounds, *fwdOne, *fwdNew)
		check(os.MkdirAll(*outDir, 0o755))
		check(os.WriteFile(filepath.Join(*outDir, "bench-forward.md"), []byte(md), 0o644))
		log.Printf("wrote %s:\n%s", filepath.Join(*outDir, "bench-forward.md"), md)
		if *only == "forward" {
			return
		}
	}
	skipLoad := false
	if *only == "" {
		// make bench runs every part: the load part's peers, when
		// missing, leave out what needs them (with -only load they are
		// required).
		if findPeer("h2load", lp.h2load) == "" {
			log.Print("load: h2load is not installed: the load part skipped (on Debian: apt-get install nghttp2-client)")
			skipLoad = true
		} else if findPeer("redis-server", "") == "" {
			log.Print("load: redis-server is not installed: the Redis variant skipped (on Debian: apt-get install redis-server)")
			lp.variants = slices.DeleteFunc(lp.variants, func(v string) bool { return v == "redis" })
		}
	}
	if (*only == "" && !skipLoad) || *only == "load" {
		// The terminators under h2load have a file of their own.
		// -profile samples the gateway's load, or with -only load h2load's.
		var lprof profileParams
		if *only == "load" {
			lprof = prof
		}
		md, bars, latBars := loadBench(dir, *binDir, lp, *nginxBin, *caddyBin, *baseline, lprof)
		check(os.MkdirAll(*outDir, 0o755))
		check(os.WriteFile(filepath.Join(*outDir, "bench-load.md"), []byte(md), 0o644))
		check(os.WriteFile(filepath.Join(*outDir, "bench-load.svg"), []byte(svg(bars, loadChart)), 0o644))
		check(os.WriteFile(filepath.Join(*outDir, "bench-latency.svg"), []byte(svg(latBars, latencyChart)), 0o644))
		log.Printf("wrote %s, %s and %s", filepath.Join(*outDir, "bench-load.md"), filepath.Join(*outDir, "bench-load.svg"), filepath.Join(*outDir, "bench-latency.svg"))
		if *only == "load" {
			return
		}
	}
	if *only == "shared" || *only == "" && findPeer("redis-server", "") != "" {
		// The fleet's shared state: own store against Redis.
		var sprof profileParams
		if *only == "shared" {
			sprof = prof
		}
		md := sharedBench(dir, *binDir, sp, sprof)
		if sprof.file != "" {
			return
		}
		check(os.MkdirAll(*outDir, 0o755))
		check(os.WriteFile(filepath.Join(*outDir, "bench-shared.md"), []byte(md), 0o644))
		log.Printf("wrote %s", filepath.Join(*outDir, "bench-shared.md"))
		if *only == "shared" {
			return
		}
	} else if *only == "" {
		log.Print("shared: redis-server is not installed: the shared-state comparison skipped (on Debian: apt-get install redis-server)")
	}
	if *only == "" || *only == "memory" {
		md := memoryBench(dir, *binDir, mp, *nginxBin, *caddyBin, *heapProfile)
		check(os.MkdirAll(*outDir, 0o755))
		check(os.WriteFile(filepath.Join(*outDir, "bench-memory.md"), []byte(md), 0o644))
		log.Printf("wrote %s", filepath.Join(*outDir, "bench-memory.md"))
		if *only == "memory" {
			return
		}
	}
	var hsMD, gwMD string
	if *only != "gateway" {
		var bars []bar
		hsMD, bars = handshakeBench(dir, *binDir, *rounds, *handshakes, *requests, *warmMax)
		check(os.MkdirAll(*outDir, 0o755))
		check(os.WriteFile(filepath.Join(*outDir, "bench.svg"), []byte(svg(bars, handshakeChart)), 0o644))
	}
	if *only != "handshake" {
		var bars []bar
		gwMD, bars = gatewayBench(dir, *binDir, gp, *nginxBin, *caddyBin, *baseline, prof)
		check(os.MkdirAll(*outDir, 0o755))
		check(os.WriteFile(filepath.Join(*outDir, "bench-gateway.svg"), []byte(svg(bars, gatewayChart)), 0o644))
	}
	// bench.md holds both parts; a run of one keeps the other's.
	mdFile := filepath.Join(*outDir, "bench.md")
	old, _ := os.ReadFile(mdFile)
	oldHS, oldGW := splitBenchMD(string(old))
	if *only == "gateway" {
		hsMD = oldHS
	}
	if *only == "handshake" {
		gwMD = oldGW
	}
	check(os.WriteFile(mdFile, []byte(joinBenchMD(hsMD, gwMD)), 0o644))
	written := []string{mdFile}
	if *only != "gateway" {
		written = append(written, filepath.Join(*outDir, "bench.svg"))
	}
	if *only != "handshake" {
		written = append(written, filepath.Join(*outDir, "bench-gateway.svg"))
	}
	log.Printf("wrote %s", strings.Join(written, ", "))
}

// gatewayMarker separates the two parts of bench.md.
const gatewayMarker = "<!-- bench: gateway comparison below (bench -only gateway) -->"

func splitBenchMD(s string) (hs, gw string) {
	if i := strings.Index(s, gatewayMarker); i >= 0 {
		return strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+len(gatewayMarker):])
	}
	return strings.TrimSpace(s), ""
}

func joinBenchMD(hs, gw string) string {
	hs, gw = strings.TrimSpace(hs), strings.TrimSpace(gw)
	if gw == "" {
		return hs + "\n"
	}
	if hs == "" {
		return gatewayMarker + "\n\n" + gw + "\n"
	}
	return hs + "\n\n" + gatewayMarker + "\n\n" + gw + "\n"
}

// handshakeBench measures server CPU per handshake, ours against stock
// crypto/tls, then GET /debug throughput; it returns the Markdown and the
// chart's bars.
func handshakeBench(dir, binDir string, rounds, handshakes, requests, warmMax int) (string, []bar) {
	pkis := map[string]*benchPKI{"ECDSA P-256": makePKI(dir, "ecdsa", false), "RSA-2048": makePKI(dir, "rsa", true)}
	type servers struct{ ours, always, never *proc }
	startServers := func() map[string]servers {
		running := map[string]servers{}
		for _, name := range []string{"ECDSA P-256", "RSA-2048"} {
			p := pkis[name]
			running[name] = servers{
				ours:   startOurs(filepath.Join(binDir, "server"), p),
				always: startStock("always", p),
				never:  startStock("never", p),
			}
		}
		return running
	}
	defer stopAll()

	type config struct {
		label   string
		server  string // which of servers
		cert    string
		group   string
		srv     func(servers) *proc
		flagged bool
	}
	ours := func(s servers) *proc { return s.ours }
	always := func(s servers) *proc { return s.always }
	never := func(s servers) *proc { return s.never }
	var configs []config
	for _, certName := range []string{"ECDSA P-256", "RSA-2048"} {
		for _, group := range []string{"X25519", "X25519MLKEM768"} {
			configs = append(configs,
				config{"ours, flag 80 + certificate", "ours", certName, group, ours, true},
				config{"stock, always requests", "stock, always requests", certName, group, always, true},
				config{"ours, no flag", "ours", certName, group, ours, false},
				config{"stock, never requests", "stock, never requests", certName, group, never, false},
			)
		}
	}
	// Each round starts the servers anew, as the gateway comparison
	// does (runGateway), and takes the configurations in an order
	// rotated each round.
	// Each round's handshakes go in slices the configurations take in
	// turn, as the gateway's load does (gatewaySlices).
	// A server started for the round is first warmed by each of its
	// configurations in turn, until its memory stops growing
	// (warmUntilSettled); what that took is reported by server.
	results := make([][]float64, len(configs))
	warmed := map[string][]warmup{} // by the server's configuration label, per round
	per := max(handshakes/gatewaySlices, 1)
	for r := range rounds {
		running := startServers()
		sums := make([]float64, len(configs))
		warms := map[string]warmup{}
		for k := range configs {
			c := configs[(k+r)%len(configs)]
			s := c.srv(running[c.cert])
			one := handshaker(s, pkis[c.cert], c.group, c.flagged)
			w, err := warmUntilSettled(s, warmMax, func() error { one(); return nil })
			check(err)
			key := c.cert + ", " + c.server
			warms[key] = warmup{calls: warms[key].calls + w.calls, cpu: warms[key].cpu + w.cpu}
		}
		for key, w := range warms {
			warmed[key] = append(warmed[key], w)
		}
		for sl := range gatewaySlices {
			for k := range configs {
				i := (k + r + sl) % len(configs)
				c := configs[i]
				sums[i] += handshakeCPU(c.srv(running[c.cert]), pkis[c.cert], c.group, c.flagged, per, 5)
			}
		}
		for i := range configs {
			results[i] = append(results[i], sums[i]/gatewaySlices)
		}
		stopAll()
		log.Printf("round %d/%d done", r+1, rounds)
	}

	var md strings.Builder
	pinned := ""
	if serverCPU != "" {
		pinned = fmt.Sprintf("; servers pinned to CPU %s, load on the other", serverCPU)
	}
	fmt.Fprintf(&md, "Server CPU per full TLS 1.3 handshake (µs, median of %d interleaved rounds of %d handshakes, the servers started anew and warmed each round and taking %d turns; server process CPU time; %d cores%s):\n\n", rounds, per*gatewaySlices, gatewaySlices, numCPU(), pinned)
	fmt.Fprintf(&md, "| certificate | key share | ours, flag 80 + cert | stock, always requests | ratio (median per round) | ours, no flag | stock, never requests | ratio (median per round) |\n|---|---|---|---|---|---|---|---|\n")
	var bars []bar
	for i := 0; i < len(configs); i += 4 {
		m := func(j int) float64 { return median(results[i+j]) }
		// Ratios are taken within each round (the two measurements ran
		// back to back) and their median reported, so that drift in the
		// machine's speed between rounds cancels out.
		ratio := func(a, b int) float64 {
			var r []float64
			for k := range results[i+a] {
				r = append(r, results[i+a][k]/results[i+b][k])
			}
			return median(r)
		}
		fmt.Fprintf(&md, "| %s | %s | %.0f | %.0f | %.3f | %.0f | %.0f | %.3f |\n", configs[i].cert, configs[i].group,
			m(0), m(1), ratio(0, 1), m(2), m(3), ratio(2, 3))
		for j := range 4 {
			bars = append(bars, bar{group: configs[i].cert + ", " + configs[i].group, label: configs[i+j].label, value: m(j)})
		}
	}
	fmt.Fprintf(&md, "\nEach server started for a round was first warmed, by each of its configurations in turn, until %d handshakes took fewer than one page fault each (its heap had grown to its collector's goal): a cost paid once per process, not per handshake. What that took (median of rounds):\n\n", warmBatch)
	fmt.Fprintf(&md, "| server | handshakes | CPU |\n|---|---|---|\n")
	for _, certName := range []string{"ECDSA P-256", "RSA-2048"} {
		for _, server := range []string{"ours", "stock, always requests", "stock, never requests"} {
			var calls, cpu []float64
			for _, w := range warmed[certName+", "+server] {
				calls, cpu = append(calls, float64(w.calls)), append(cpu, w.cpu.Seconds()*1e3)
			}
			fmt.Fprintf(&md, "| %s, %s | %.0f | %.0f ms |\n", server, certName, median(calls), median(cpu))
		}
	}

	// Throughput and latency of GET /debug against our server (ECDSA).
	p := pkis["ECDSA P-256"]
	srv := startOurs(filepath.Join(binDir, "server"), p)
	u, _ := url.Parse("https://" + srv.addr + "/debug")
	fmt.Fprintf(&md, "\nGET /debug against this server (ECDSA P-256, flag 80 with a certificate; %d requests each):\n\n", requests)
	fmt.Fprintf(&md, "| connections | clients | requests/s | p50 | p99 |\n|---|---|---|---|---|\n")
	for _, keep := range []bool{true, false} {
		for _, c := range []int{1, 2, 8} {
			rps, p50, p99 := throughput(p, u, keep, c, requests)
			mode := "one kept-alive HTTP/2 connection"
			if !keep {
				mode = "a new connection per request"
			}
			fmt.Fprintf(&md, "| %s | %d | %.0f | %s | %s |\n", mode, c, rps, ms(p50), ms(p99))
		}
	}
	fmt.Print(md.String())
	return md.String(), bars
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

// started lists the server processes, so that no exit leaves one behind.
var (
	startedMu sync.Mutex
	started   []*proc
)

// addStarted records p for stopAll.
func addStarted(p *proc) {
	startedMu.Lock()
	started = append(started, p)
	startedMu.Unlock()
}

func stopAll() {
	startedMu.Lock()
	defer startedMu.Unlock()
	for _, p := range started {
		p.stop()
	}
	started = nil
}

// scratchDir is the run's temporary directory, removed on every exit.
var scratchDir string

// cleanup stops every server process and removes the scratch directory.
func cleanup() {
	stopAll()
	if scratchDir != "" {
		os.RemoveAll(scratchDir)
	}
}

// fatalf stops every server process, then exits.
func fatalf(format string, a ...any) {
	cleanup()
	log.Fatalf(format, a...)
}

func numCPU() int {
	n := 0
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "processor") {
			n++
		}
	}
	return n
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// benchPKI is a root, a server certificate and a client certificate.
type benchPKI struct {
	rootCA, serverCert, serverKey string
	clientCert, clientKey         string
	pool                          *x509.CertPool
	client                        utls.Certificate
}

func makePKI(dir, name string, rsaServer bool) *benchPKI {
	now := time.Now()
	ca, err := certs.NewCA(pkix.Name{CommonName: "bench root " + name}, nil, nil, now.Add(-time.Hour), now.AddDate(1, 0, 0))
	check(err)
	leaf := certs.Leaf{Hosts: []string{"localhost", "127.0.0.1"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0)}
	if rsaServer {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		check(err)
		leaf.Key = k
	}
	sc, sk, err := ca.Issue(leaf)
	check(err)
	cc, ck, err := ca.Issue(certs.Leaf{Hosts: []string{"client.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0)})
	check(err)
	p := &benchPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca.Cert)
	write := func(file, typ string, der []byte) string {
		f := filepath.Join(dir, name+"-"+file)
		check(os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return f
	}
	keyDER := func(k any) []byte {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		check(err)
		return b
	}
	p.rootCA = write("root.crt", "CERTIFICATE", ca.Cert.Raw)
	p.serverCert = write("server.crt", "CERTIFICATE", sc.Raw)
	p.serverKey = write("server.key", "PRIVATE KEY", keyDER(sk))
	p.clientCert = write("client.crt", "CERTIFICATE", cc.Raw)
	p.clientKey = write("client.key", "PRIVATE KEY", keyDER(ck))
	p.client = utls.Certificate{Certificate: [][]byte{cc.Raw}, PrivateKey: ck, Leaf: cc}
	return p
}

// proc is a server process.
type proc struct {
	cmd  *exec.Cmd
	addr string
	// graceful, when set, is the signal stop sends first, for a server
	// whose workers SIGKILL to it would leave behind (nginx); exited is
	// closed once it has been waited for.
	graceful syscall.Signal
	exited   chan struct{}
}

var listenLine = []string{"msg=listening addr=", "listening on "}

// serverCPU, when set, pins the server processes to a CPU of their own so
// that the load generator does not compete with them.
var serverCPU string

// start starts a server pinned to serverCPU and returns once it has logged
// the address it listens on; it exits the bench if the server does not.
func start(name string, args ...string) *proc {
	p, err := startListening(true, name, args...)
	if err != nil {
		fatalf("%v", err)
	}
	return p
}

// onServerCPU is the command that runs name with args on serverCPU
// (taskset), when it is set.
func onServerCPU(name string, args ...string) (string, []string) {
	if serverCPU == "" {
		return name, args
	}
	return "taskset", append([]string{"-c", serverCPU, name}, args...)
}

// startListening starts a server, pinned to serverCPU if pin, and returns
// once it has logged the address it listens on.
func startListening(pin bool, name string, args ...string) (*proc, error) {
	if pin {
		name, args = onServerCPU(name, args...)
	}
	cmd := exec.Command(name, args...)
	setDeathSignal(cmd, syscall.SIGKILL)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr := make(chan string, 1)
	var seenMu sync.Mutex
	var seen strings.Builder
	go func() {
		buf := make([]byte, 4096)
		sent := false
		for {
			n, err := stderr.Read(buf)
			seenMu.Lock()
			if seen.Len() < 1<<16 {
				seen.Write(buf[:n])
			}
			s := seen.String()
			seenMu.Unlock()
			if !sent {
				for _, marker := range listenLine {
					if i := strings.Index(s, marker); i >= 0 {
						rest := s[i+len(marker):]
						if j := strings.IndexAny(rest, " \n"); j > 0 {
							addr <- rest[:j]
							sent = true
						}
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case a := <-addr:
		p := &proc{cmd: cmd, addr: a}
		addStarted(p)
		return p, nil
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		seenMu.Lock()
		defer seenMu.Unlock()
		return nil, fmt.Errorf("%s did not start: %s", name, strings.TrimSpace(seen.String()))
	}
}

func (p *proc) stop() {
	if p.exited == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		return
	}
	kids := childProcs(p.cmd.Process.Pid)
	p.cmd.Process.Signal(p.graceful)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	// A worker that outlived its master (it normally exits first).
	for _, k := range kids {
		k.kill()
	}
}

// cpu returns the CPU time the process has used, summed over its threads,
// from /proc/PID/task/*/schedstat (nanoseconds on the CPU).
func (p *proc) cpu() time.Duration { return cpuOfPID(p.cmd.Process.Pid) }

// cpuOfPID sums the CPU time of a process's threads.
func cpuOfPID(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(data))
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(n)
		}
	}
	return total
}

var groupIDs = map[string][]utls.CurveID{
	"X25519":         {utls.X25519, utls.CurveP256},
	"X25519MLKEM768": {utls.X25519MLKEM768, utls.X25519, utls.CurveP256},
}

// handshakeCPU runs n full handshakes (new connection each, two at a time)
// and returns the server's CPU time per handshake in microseconds. A
// handshake counts once the client has read the server's first HTTP/2
// frame, which the server sends only after the handshake completed.
func handshakeCPU(s *proc, p *benchPKI, group string, flagged bool, n, warm int) float64 {
	one := handshaker(s, p, group, flagged)
	for range warm {
		one()
	}
	before := s.cpu()
	parallel(n, 2, func(int) error { one(); return nil })
	time.Sleep(50 * time.Millisecond) // let the server finish closing
	return float64(s.cpu()-before) / float64(n) / 1e3
}

// handshaker returns a function that does one full handshake with s, reads
// a byte and closes, or ends the bench.
func handshaker(s *proc, p *benchPKI, group string, flagged bool) func() {
	hello := tlsclient.Hello{NextProtos: []string{"h2"}, Groups: groupIDs[group]}
	if flagged {
		hello.Flags = tlsflags.Must(tlsflags.RequestMTLS)
	}
	cfg := &utls.Config{RootCAs: p.pool, ServerName: "localhost",
		GetClientCertificate: func(*utls.CertificateRequestInfo) (*utls.Certificate, error) { return &p.client, nil }}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := hello.Dial(ctx, &net.Dialer{}, "tcp", s.addr, cfg)
		if err != nil {
			fatalf("handshake with %s: %v", s.addr, err)
		}
		if st := c.ConnectionState(); st.Version != tls.VersionTLS13 || st.DidResume {
			fatalf("not a full TLS 1.3 handshake")
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			fatalf("read from %s: %v", s.addr, err)
		}
		c.Close()
	}
}

// parallel runs f(0..n-1) on conc goroutines and returns the first error.
func parallel(n, conc int, f func(i int) error) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     int
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := firstErr != nil
				mu.Unlock()
				if i >= n || stop {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// throughput measures GET /debug with c concurrent clients, over one
// shared kept-alive HTTP/2 connection or a new connection per request.
func throughput(p *benchPKI, u *url.URL, keepAlive bool, c, n int) (float64, time.Duration, time.Duration) {
	cl, err := client.New(client.Config{Flags: tlsflags.Must(80), RootCAs: p.pool, CertFile: p.clientCert, KeyFile: p.clientKey})
	check(err)
	ctx := context.Background()
	var shared *client.Conn
	if keepAlive {
		shared, err = cl.Dial(ctx, u)
		check(err)
		defer shared.Close()
	}
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	start := time.Now()
	parallel(n, c, func(int) error {
		t0 := time.Now()
		cn := shared
		if cn == nil {
			var err error
			cn, err = cl.Dial(ctx, u)
			if err != nil {
				fatalf("%v", err)
			}
		}
		req, _ := http.NewRequest("GET", u.String(), nil)
		resp, _, err := cl.Do(ctx, cn, req, 1<<20)
		if err != nil || resp.StatusCode != http.StatusOK {
			fatalf("GET /debug: %v", err)
		}
		if shared == nil {
			cn.Close()
		}
		mu.Lock()
		lat = append(lat, time.Since(t0))
		mu.Unlock()
		return nil
	})
	elapsed := time.Since(start)
	slices.Sort(lat)
	return float64(n) / elapsed.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100]
}

// subcommand runs the bench's helper processes, when args name one, and
// reports whether it did: serve-stock, serve-origin, and ping-redis ADDR
// N (redisFloor's client: prints its CPU time per PING in nanoseconds).
// The tests' binary runs them too (TestMain), so that the bench's tests
// can start them.
func subcommand(args []string) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0] {
	case "serve-stock":
		serveStock(args[1:])
	case "serve-origin":
		serveOrigin(args[1:])
	case "ping-redis":
		if len(args) != 3 {
			fatalf("usage: bench ping-redis ADDR N")
		}
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 1 {
			fatalf("ping-redis: %q is not a count", args[2])
		}
		per, err := pingRedis(args[1], n)
		check(err)
		fmt.Println(int64(per))
	default:
		return false
	}
	return true
}

// serveStock runs a stock crypto/tls HTTPS server, no inspection layer,
// with this project's handler: -mode always sends every client a
// CertificateRequest, -mode never sends none.
func serveStock(args []string) {
	fs := flag.NewFlagSet("serve-stock", flag.ExitOnError)
	mode := fs.String("mode", "never", "always or never")
	certFile := fs.String("cert", "", "")
	keyFile := fs.String("key", "", "")
	ca := fs.String("ca", "", "")
	addr := fs.String("addr", "127.0.0.1:0", "")
	pprofAddr := fs.String("pprof-addr", "", "")
	fs.Parse(args)
	if *pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
		go http.ListenAndServe(*pprofAddr, mux)
	}
	srv, err := server.New(server.Config{Files: server.Files{Cert: *certFile, Key: *keyFile, ClientCA: *ca},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	check(err)
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	check(err)
	pool, err := certs.LoadPool(*ca)
	check(err)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	switch *mode {
	case "always":
		cfg.ClientAuth, cfg.ClientCAs = tls.RequestClientCert, pool
	case "never":
	default:
		log.Fatalf("-mode must be always or never")
	}
	ln, err := net.Listen("tcp", *addr)
	check(err)
	fmt.Fprintf(os.Stderr, "listening on %s\n", ln.Addr())
	hs := &http.Server{Handler: srv.Pages("/"), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	err = hs.Serve(tls.NewListener(ln, cfg))
	if !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// startOurs starts this project's server, bin, with p's certificates and
// the extra flags.
func startOurs(bin string, p *benchPKI, extra ...string) *proc {
	return start(bin, append([]string{"-cert", p.serverCert, "-key", p.serverKey, "-client-cacert", p.rootCA,
		"-listen-addr", "127.0.0.1:0"}, extra...)...)
}

// startStock starts the stock crypto/tls server (serve-stock) in mode
// (always or never requesting a certificate), with p's certificates and
// the extra flags.
func startStock(mode string, p *benchPKI, extra ...string) *proc {
	self, err := os.Executable()
	check(err)
	return start(self, append([]string{"serve-stock", "-mode", mode, "-cert", p.serverCert, "-key", p.serverKey,
		"-ca", p.rootCA, "-addr", "127.0.0.1:0"}, extra...)...)
}

// profileWhile writes to file the CPU profile that the server serving
// pprof on pprofAddr takes over d, running load until it is written; load
// returns how many units (requests, handshakes) it did, and bin is the
// server's binary, for the command that reads the profile.
func profileWhile(pprofAddr, file string, d time.Duration, bin, unit string, load func() (int, error)) error {
	done := make(chan error, 1)
	go func() {
		done <- fetchTo(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, int(d.Seconds())), file)
	}()
	n := 0
	for {
		k, err := load()
		if err != nil {
			return err
		}
		n += k
		select {
		case err := <-done:
			if err == nil {
				log.Printf("wrote %s (about %d %s while it sampled): go tool pprof -top %s %s", file, n, unit, bin, file)
			}
			return err
		default:
		}
	}
}

// profileHandshakes writes a CPU profile of this server, or of the stock
// crypto/tls one always requesting a certificate, taken while it does
// flagged full handshakes, two at a time.
func profileHandshakes(dir, binDir, file string, d time.Duration, stock bool) error {
	pa, err := freeAddr()
	if err != nil {
		return err
	}
	p := makePKI(dir, "ecdsa", false)
	var s *proc
	bin := filepath.Join(binDir, "server")
	if stock {
		s = startStock("always", p, "-pprof-addr", pa)
		bin, err = os.Executable()
		check(err)
	} else {
		s = startOurs(bin, p, "-pprof-addr", pa)
	}
	defer s.stop()
	one := handshaker(s, p, "X25519", true)
	return profileWhile(pa, file, d, bin, "handshakes", func() (int, error) {
		return 200, parallel(200, 2, func(int) error { one(); return nil })
	})
}
