package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
	"github.com/req-mtls/req-mtls/internal/testutil"
)

// signedHeaders signs a GET of url as the bot, once, and returns the
// fields to send it with (and to replay it with, as they are).
func signedHeaders(t *testing.T, key ed25519.PrivateKey, url string) http.Header {
	t.Helper()
	h, err := sign(key, url)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func sign(key ed25519.PrivateKey, url string) (http.Header, error) {
	r, _ := http.NewRequest("GET", url, nil)
	r.Header.Set("Signature-Agent", `"https://bot.example"`)
	params, err := httpsig.BotParams(key.Public().(ed25519.PublicKey), time.Now(), time.Minute)
	if err != nil {
		return nil, err
	}
	if err := httpsig.Sign(r, "sig1", httpsig.NewCovered([]string{"@authority", "signature-agent"}, params), key); err != nil {
		return nil, err
	}
	return r.Header, nil
}

// fleetClient sends requests to one instance (through its own PROXY
// protocol header, as the balancer would) or, with in nil, to the
// balancer; each on a connection of its own.
type fleetClient struct {
	t    *testing.T
	pool *x509.CertPool
	lb   string
	url  string // https://localhost:LBPORT/page: what every request names
}

// status sends h to in (or the balancer) and returns what the origin was
// told of the signature, or an error.
func (c *fleetClient) status(in *instance, h http.Header) (string, error) {
	addr := c.lb
	if in != nil {
		addr = in.addr
	}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   tlsConfig(c.pool),
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil && in != nil {
				_, err = io.WriteString(conn, "PROXY TCP4 127.0.0.9 127.0.0.1 40000 443\r\n")
			}
			return conn, err
		},
	}}
	defer hc.CloseIdleConnections()
	r, _ := http.NewRequest("GET", c.url, nil)
	r.Header = h.Clone()
	resp, err := hc.Do(r)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, body)
	}
	return string(body), nil
}

func (c *fleetClient) mustStatus(in *instance, h http.Header) string {
	c.t.Helper()
	s, err := c.status(in, h)
	if err != nil {
		c.t.Fatal(err)
	}
	return s
}

var redisUpLine = regexp.MustCompile(`(?m)^reqmtls_redis_up (\d+)$`)

// metricsOf returns the instance's exposition.
func metricsOf(t *testing.T, in *instance) string {
	t.Helper()
	resp, err := http.Get("http://" + in.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitRedisUp waits until every instance's reqmtls_redis_up is want, and
// returns how long that took.
func waitRedisUp(t *testing.T, fleet []*instance, want string) time.Duration {
	t.Helper()
	start := time.Now()
	for _, in := range fleet {
		got := ""
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if m := redisUpLine.FindStringSubmatch(metricsOf(t, in)); m != nil {
				if got = m[1]; got == want {
					break
				}
			}
		}
		if got != want {
			t.Fatalf("instance %s: reqmtls_redis_up %q after 15 s, want %s\n%s", in.addr, got, want, in.log.String())
		}
	}
	return time.Since(start)
}

var redisErrorsLine = regexp.MustCompile(`(?m)^reqmtls_redis_errors_total\{op="(\w+)"\} (\d+)$`)

// TestFleetRedis: three gateways behind HAProxy share a redis-server.
// A signed request replayed at another instance is refused ("nonce
// replayed"); with Redis stopped during a run of signed requests none
// fails, each instance logs the outage once and reports
// reqmtls_redis_up 0, and a replay across instances is accepted (what an
// outage costs) while one at the same instance is still refused; with
// Redis back, without a restart, a replay across instances is refused
// again.
func TestFleetRedis(t *testing.T) {
	srv := testutil.StartRedis(t)
	p := newPKI(t)
	key, _, _, pubJWK := botKey(t)
	agents := agentsListing(t, pubJWK)
	origin := statusOrigin(t)

	// A second's timeout rather than the default 50 ms: a machine this
	// busy may hold a call that long, and the replays below must be
	// judged by Redis. The outage is Redis stopped: calls fail at once.
	var fleet []*instance
	for range 3 {
		fleet = append(fleet, startInstance(t, p, "-upstream", origin.URL, "-signature-agents", agents,
			"-redis", srv.URL, "-redis-timeout", "1s"))
	}
	lb := startHAProxy(t, fleet)
	pool := x509.NewCertPool()
	root, _ := os.ReadFile(p.f("rootCA.crt"))
	pool.AppendCertsFromPEM(root)
	c := &fleetClient{t: t, pool: pool, lb: lb, url: "https://localhost:" + port(lb) + "/page"}
	waitRedisUp(t, fleet, "1")

	const replayed = `invalid;reason="nonce replayed"`
	// A replay at every other instance, and through the balancer.
	h := signedHeaders(t, key, c.url)
	if got := c.mustStatus(fleet[0], h); got != "valid" {
		t.Fatalf("a signed request at instance 1: %s, want valid", got)
	}
	for i, in := range fleet[1:] {
		if got := c.mustStatus(in, h); got != replayed {
			t.Errorf("the request replayed at instance %d: %s, want %s", i+2, got, replayed)
		}
	}
	if got := c.mustStatus(nil, h); got != replayed {
		t.Errorf("the request replayed through HAProxy: %s, want %s", got, replayed)
	}
	t.Logf("signed at instance 1: valid; replayed at instances 2 and 3 and through HAProxy: %s", replayed)

	// Redis stopped mid-run: signed requests through HAProxy, four at a
	// time, each with a nonce of its own.
	const n = 300
	var sent, failed atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for sent.Add(1) <= n {
				h, err := sign(key, c.url)
				got := ""
				if err == nil {
					got, err = c.status(nil, h)
				}
				if err != nil || got != "valid" {
					failed.Add(1)
					firstErr.Do(func() { t.Errorf("a request during the outage: %q, %v", got, err) })
				}
			}
		})
	}
	for sent.Load() < n/3 {
		time.Sleep(5 * time.Millisecond)
	}
	srv.Stop()
	stoppedAt := sent.Load()
	wg.Wait()
	t.Logf("redis stopped after %d of %d signed requests through HAProxy: %d failed", stoppedAt, n, failed.Load())
	waitRedisUp(t, fleet, "0")
	var outage []string
	for i, in := range fleet {
		m := metricsOf(t, in)
		errs := map[string]string{}
		for _, e := range redisErrorsLine.FindAllStringSubmatch(m, -1) {
			errs[e[1]] = e[2]
		}
		if errs["nonce"] == "0" && errs["ping"] == "0" || errs["nonce"] == "" {
			t.Errorf("instance %d: reqmtls_redis_errors_total nonce %q, ping %q during the outage, want some", i+1, errs["nonce"], errs["ping"])
		}
		if k := strings.Count(in.log.String(), "redis unreachable"); k != 1 {
			t.Errorf("instance %d logged %d lines for one outage, want 1:\n%s", i+1, k, in.log.String())
		}
		outage = append(outage, fmt.Sprintf("instance %d: reqmtls_redis_up 0, errors nonce=%s ping=%s", i+1, errs["nonce"], errs["ping"]))
	}
	t.Logf("during the outage: %s", strings.Join(outage, "; "))
	t.Logf("the log line: %s", lineWith(fleet[0].log.String(), "redis unreachable"))

	// What the outage costs: each instance knows its own nonces only.
	h = signedHeaders(t, key, c.url)
	if got := c.mustStatus(fleet[0], h); got != "valid" {
		t.Fatalf("a signed request at instance 1 during the outage: %s", got)
	}
	if got := c.mustStatus(fleet[0], h); got != replayed {
		t.Errorf("replayed at the same instance during the outage: %s, want %s", got, replayed)
	}
	if got := c.mustStatus(fleet[1], h); got != "valid" {
		t.Errorf("replayed at another instance during the outage: %s; each instance should have only its own nonces", got)
	}
	t.Logf("during the outage, replayed at instance 1 (where it was first seen): %s; at instance 2: valid", replayed)

	// Redis back: shared again within seconds, without a restart.
	srv.Start()
	took := waitRedisUp(t, fleet, "1")
	t.Logf("redis started again: reqmtls_redis_up 1 on every instance after %v", took.Round(10*time.Millisecond))
	for i, in := range fleet {
		if k := strings.Count(in.log.String(), "redis reachable again"); k != 1 {
			t.Errorf("instance %d logged %d lines for the outage's end, want 1:\n%s", i+1, k, in.log.String())
		}
	}
	t.Logf("the log line: %s", lineWith(fleet[0].log.String(), "redis reachable again"))
	h = signedHeaders(t, key, c.url)
	if got := c.mustStatus(fleet[1], h); got != "valid" {
		t.Fatalf("a signed request at instance 2 after the outage: %s", got)
	}
	for _, in := range []*instance{fleet[2], fleet[0]} {
		if got := c.mustStatus(in, h); got != replayed {
			t.Errorf("replayed at another instance after the outage: %s, want %s", got, replayed)
		}
	}
	t.Logf("after the outage: signed at instance 2, replayed at instances 3 and 1: %s", replayed)
	for i, in := range fleet {
		m := metricsOf(t, in)
		t.Logf("instance %d: %s", i+1, strings.Join(grepLines(m, "reqmtls_redis_errors_total{", `reqmtls_redis_request_duration_seconds_count{op="nonce"}`), ", "))
	}
}

// lineWith returns the first line of s containing sub.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// grepLines returns the lines of s starting with any of prefixes.
func grepLines(s string, prefixes ...string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return out
}

// TestRedisCost measures what sharing nonces in Redis costs a gateway on
// the kept-alive path, when REQ_MTLS_REDIS_COST is set (a measurement,
// run by hand: go test -v -run TestRedisCost ./e2e): two gateways verify
// signed requests, one with its own nonce store, one with a redis-server
// on loopback; 4000 requests (signed beforehand) over one kept-alive
// HTTP/2 connection, one at a time and four at a time, in 5 interleaved
// rounds; the gateway's CPU time per request (/proc, Linux) and the
// median latency, medians over the rounds.
func TestRedisCost(t *testing.T) {
	if os.Getenv("REQ_MTLS_REDIS_COST") == "" {
		t.Skip("set REQ_MTLS_REDIS_COST=1 to measure the cost of the shared nonce check")
	}
	srv := testutil.StartRedis(t)
	p := newPKI(t)
	key, _, _, pubJWK := botKey(t)
	agents := agentsListing(t, pubJWK)
	origin := statusOrigin(t)
	pool := x509.NewCertPool()
	root, _ := os.ReadFile(p.f("rootCA.crt"))
	pool.AppendCertsFromPEM(root)
	type gateway struct {
		name, addr string
		pid        int
	}
	var gws []gateway
	for _, g := range []struct {
		name  string
		extra []string
	}{{"own store", nil}, {"redis", []string{"-redis", srv.URL}}} {
		addr, proc, _ := startStoppable(t, "server", nil, listening, append([]string{"-cert", p.f("server.crt"), "-key", p.f("server.key"),
			"-listen-addr", "127.0.0.1:0", "-upstream", origin.URL, "-signature-agents", agents}, g.extra...)...)
		gws = append(gws, gateway{g.name, addr, proc.Pid})
	}
	const n = 4000
	for _, conc := range []int{1, 4} {
		cpu, p50 := map[string][]float64{}, map[string][]float64{}
		for range 5 {
			for _, g := range gws {
				tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true,
					DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
						return (&net.Dialer{}).DialContext(ctx, network, g.addr)
					}}
				hc := &http.Client{Transport: tr}
				url := "https://localhost:" + port(g.addr) + "/page"
				if resp, err := hc.Get(url); err != nil || resp.ProtoMajor != 2 {
					t.Fatalf("%s: not HTTP/2: %v", g.name, err)
				} else {
					resp.Body.Close()
				}
				signed := make([]http.Header, n+200)
				for i := range signed {
					signed[i] = signedHeaders(t, key, url)
				}
				var bad atomic.Int64
				get := func(h http.Header) {
					r, _ := http.NewRequest("GET", url, nil)
					r.Header = h
					resp, err := hc.Do(r)
					if err != nil {
						bad.Add(1)
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if string(b) != "valid" {
						bad.Add(1)
					}
				}
				for _, h := range signed[n:] { // warm up
					get(h)
				}
				took := make([]time.Duration, n)
				before := processCPU(t, g.pid)
				var wg sync.WaitGroup
				for w := range conc {
					wg.Go(func() {
						for i := w; i < n; i += conc {
							start := time.Now()
							get(signed[i])
							took[i] = time.Since(start)
						}
					})
				}
				wg.Wait()
				spent := processCPU(t, g.pid) - before
				tr.CloseIdleConnections()
				if bad.Load() != 0 {
					t.Fatalf("%s: %d of %d requests not valid", g.name, bad.Load(), n)
				}
				slices.Sort(took)
				cpu[g.name] = append(cpu[g.name], float64(spent.Microseconds())/n)
				p50[g.name] = append(p50[g.name], float64(took[n/2].Microseconds())/1000)
			}
		}
		median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
		own, shared := median(cpu["own store"]), median(cpu["redis"])
		t.Logf("%d at a time: CPU per request %.0f µs with its own store, %.0f µs with redis (%+.0f%%); median latency %.2f ms and %.2f ms",
			conc, own, shared, 100*(shared-own)/own, median(p50["own store"]), median(p50["redis"]))
	}
}

// processCPU is the user and system time of process pid so far (Linux).
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ 100
}

// TestFleetRedisLimit: one identity under a limit rule of 10/s, burst 5,
// through HAProxy to three instances that share their buckets in Redis:
// the fleet together admits the rule's rate, not three times it.
func TestFleetRedisLimit(t *testing.T) {
	srv := testutil.StartRedis(t)
	p := newPKI(t)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer origin.Close()
	key, _, _, pubJWK := botKey(t)
	agents := agentsListing(t, pubJWK)
	var fleet []*instance
	for i := range 3 {
		dir := t.TempDir()
		accessLog := filepath.Join(dir, "access.log")
		conf := fmt.Sprintf(`cert: %s
key: %s
listen_addr: 127.0.0.1:0
admin_addr: 127.0.0.1:0
proxy_protocol_from: [127.0.0.0/8]
access_log: %s
upstream: %s
signature_agents: %s
redis: %s
redis_timeout: 1s
rules:
  - name: ten-a-second
    action: limit
    rate: 10/s
    burst: 5
`, p.f("server.crt"), p.f("server.key"), accessLog, origin.URL, agents, srv.URL)
		file := filepath.Join(dir, fmt.Sprintf("instance%d.yaml", i+1))
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		fleet = append(fleet, startInstanceWith(t, accessLog, "-config", file))
	}
	lb := startHAProxy(t, fleet)
	waitRedisUp(t, fleet, "1")
	pool := x509.NewCertPool()
	root, _ := os.ReadFile(p.f("rootCA.crt"))
	pool.AppendCertsFromPEM(root)
	// A new connection for each request, so that the balancer spreads
	// them over the three.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	u := "https://localhost:" + port(lb) + "/page"
	send := func(r *http.Request) (int, string, error) {
		resp, err := c.Do(r)
		if err != nil {
			return 0, "", err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After"), nil
	}
	driveLimit(t, func() (int, string, error) {
		r, _ := http.NewRequest("GET", u, nil)
		return send(r)
	}, 10, 5)
	// Per instance, from the access logs (written within 100 ms).
	time.Sleep(300 * time.Millisecond)
	var per []string
	for i, in := range fleet {
		log, _ := os.ReadFile(in.accessLog)
		ok, limited := strings.Count(string(log), " status=200 "), strings.Count(string(log), " status=429 ")
		if ok+limited == 0 {
			t.Errorf("instance %d served none of the requests: the balancer did not spread them", i+1)
		}
		per = append(per, fmt.Sprintf("instance %d: %d admitted, %d refused", i+1, ok, limited))
	}
	t.Logf("by instance, from their access logs: %s", strings.Join(per, "; "))

	// Signed requests: the agent's bucket, each request's nonce and token
	// taken in one call to Redis (the instances count nonce calls, and no
	// limit call of their own).
	before := make([]map[string]int, len(fleet))
	for i, in := range fleet {
		before[i] = redisCalls(t, in)
	}
	var signed atomic.Int64
	driveLimit(t, func() (int, string, error) {
		h, err := sign(key, u)
		if err != nil {
			return 0, "", err
		}
		r, _ := http.NewRequest("GET", u, nil)
		r.Header = h
		signed.Add(1)
		return send(r)
	}, 10, 5)
	nonces, limits := 0, 0
	per = per[:0]
	for i, in := range fleet {
		after := redisCalls(t, in)
		n, l := after["nonce"]-before[i]["nonce"], after["limit"]-before[i]["limit"]
		nonces, limits = nonces+n, limits+l
		// A send per call made at once or batch made together.
		sends, sent := after[sendsKey]-before[i][sendsKey], after[sentKey]-before[i][sentKey]
		if sent != n || sends < 1 || sends > sent {
			t.Errorf("instance %d: %d sends to Redis carrying %d calls for %d nonce calls, want all the calls sent, in at least one send and at most one a call", i+1, sends, sent, n)
		}
		per = append(per, fmt.Sprintf("instance %d: %d nonce calls in %d sends, %d limit calls", i+1, n, sends, l))
	}
	if nonces != int(signed.Load()) || limits != 0 {
		t.Errorf("%d signed requests made %d nonce calls and %d limit calls to Redis (%s); want one nonce call each, carrying its token, and no limit call", signed.Load(), nonces, limits, strings.Join(per, "; "))
	}
	t.Logf("signed: %s", strings.Join(per, "; "))
}

var (
	redisCallsLine = regexp.MustCompile(`(?m)^reqmtls_redis_request_duration_seconds_count\{op="(\w+)"\} (\d+)$`)
	redisSentLine  = regexp.MustCompile(`(?m)^reqmtls_redis_(sends|sent_calls)_total (\d+)$`)
)

// redisCalls's keys for reqmtls_redis_sends_total and
// reqmtls_redis_sent_calls_total.
const sendsKey, sentKey = "sends", "sent_calls"

// redisCalls returns the instance's count of Redis calls by op, and of
// their sends and the calls those carried.
func redisCalls(t *testing.T, in *instance) map[string]int {
	t.Helper()
	m := metricsOf(t, in)
	calls := map[string]int{}
	for _, c := range redisCallsLine.FindAllStringSubmatch(m, -1) {
		calls[c[1]], _ = strconv.Atoi(c[2])
	}
	sent := redisSentLine.FindAllStringSubmatch(m, -1)
	for _, c := range sent {
		calls[c[1]], _ = strconv.Atoi(c[2])
	}
	if len(sent) != 2 {
		t.Errorf("instance %s: reqmtls_redis_sends_total and reqmtls_redis_sent_calls_total not both reported", in.addr)
	}
	return calls
}
