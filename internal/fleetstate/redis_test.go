package fleetstate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/testutil"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// observer records what a Redis reports.
type observer struct {
	mu    sync.Mutex
	ups   []bool
	calls map[string]int
	errs  []error
}

func (o *observer) Up(up bool) { o.mu.Lock(); o.ups = append(o.ups, up); o.mu.Unlock() }
func (o *observer) Call(op string, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.calls == nil {
		o.calls = map[string]int{}
	}
	o.calls[op]++
	if err != nil {
		o.errs = append(o.errs, err)
	}
}

// instance is one server's view of the fleet's Redis.
type instance struct {
	r      *Redis
	nonces *Nonces
	log    *testutil.Buffer
	obs    *observer
}

// open connects to url as one instance, pinging every 50 ms. Its timeout
// is a second, not the default 50 ms: a busy test machine may hold a call
// that long, and these tests are about what Redis shares (the timeout's
// own is TestNoncesSlowRedis).
func open(t *testing.T, url string) *instance {
	t.Helper()
	return openTimeout(t, url, time.Second)
}

func openTimeout(t *testing.T, url string, timeout time.Duration) *instance {
	t.Helper()
	return openConfig(t, Config{URL: url, PingInterval: 50 * time.Millisecond, Timeout: timeout})
}

// openConfig opens cfg's Redis as an instance, logging to its buffer.
func openConfig(t *testing.T, cfg Config) *instance {
	t.Helper()
	in := &instance{log: &testutil.Buffer{}, obs: &observer{}}
	cfg.Logger = slog.New(slog.NewTextHandler(in.log, nil))
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	r.SetObserver(in.obs)
	in.r, in.nonces = r, r.Nonces(webbotauth.NewMemoryNonces(0, nil))
	return in
}

// waitUp waits until in's Redis is up (or down), by its background ping.
func waitUp(t *testing.T, in *instance, up bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if in.r.Up() == up {
			return
		}
	}
	t.Fatalf("redis up = %v after 10 s, want %v\n%s", in.r.Up(), up, in.log)
}

func seen(t *testing.T, in *instance, key string) bool {
	t.Helper()
	replayed, err := in.nonces.Seen(context.Background(), key, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatalf("Seen(%q): %v", key, err)
	}
	return replayed
}

// TestNoncesShared: a nonce seen at one instance is a replay at another,
// and is kept in Redis until its expiry, not longer.
func TestNoncesShared(t *testing.T) {
	srv := testutil.StartRedis(t)
	a, b := open(t, srv.URL), open(t, srv.URL)
	if seen(t, a, "k1 n1") {
		t.Fatal("a first nonce is a replay at a")
	}
	if !seen(t, b, "k1 n1") {
		t.Error("a nonce seen at a is no replay at b")
	}
	if !seen(t, a, "k1 n1") {
		t.Error("a nonce seen at a is no replay at a")
	}
	if seen(t, b, "k1 n2") || seen(t, b, "k2 n1") {
		t.Error("another nonce, or the same nonce of another key, is a replay")
	}

	// The key's lifetime is what is left of the nonce's.
	expiry := time.Now().Add(1500 * time.Millisecond)
	if r, err := a.nonces.Seen(context.Background(), "k1 short", expiry); r || err != nil {
		t.Fatalf("Seen: %v, %v", r, err)
	}
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer raw.Close()
	ttl, err := raw.PTTL(context.Background(), a.r.key("nonce:", "k1 short")).Result()
	if err != nil || ttl <= 0 || ttl > 1500*time.Millisecond {
		t.Errorf("PTTL of a nonce expiring in 1.5 s: %v, %v; want at most 1.5 s", ttl, err)
	}
	keys, _ := raw.Keys(context.Background(), "reqmtls:nonce:*").Result()
	if len(keys) != 4 {
		t.Errorf("%d nonce keys, want the 4 nonces seen: %v", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "reqmtls:nonce:") || len(k) != len("reqmtls:nonce:")+22 {
			t.Errorf("key %q: want reqmtls:nonce: and 22 bytes", k)
		}
	}
	if len(a.obs.errs)+len(b.obs.errs) != 0 || a.obs.calls["nonce"] == 0 {
		t.Errorf("observed calls %v, errors %v %v", a.obs.calls, a.obs.errs, b.obs.errs)
	}
}

// TestNoncesOutage: Redis stopped, every check still answers, from the
// local store (the instance's own nonces, from before the outage too,
// are still replays); one log line starts the outage and one ends it,
// and once Redis is back (no restart) nonces are shared again.
func TestNoncesOutage(t *testing.T) {
	srv := testutil.StartRedis(t)
	a, b := open(t, srv.URL), open(t, srv.URL)
	if seen(t, a, "k before") {
		t.Fatal("first use is a replay")
	}
	srv.Stop()
	for i := range 20 {
		if seen(t, a, "k during "+string(rune('a'+i))) {
			t.Fatalf("a first nonce during the outage is a replay")
		}
	}
	if a.r.Up() {
		t.Fatal("redis still up after failed calls")
	}
	if !seen(t, a, "k before") || !seen(t, a, "k during a") {
		t.Error("during the outage, a nonce this instance saw is no replay")
	}
	// What the outage costs: b cannot know what a saw meanwhile.
	waitUp(t, b, false)
	if seen(t, b, "k during b") {
		t.Error("b knew of a nonce a saw during the outage")
	}
	if n := strings.Count(a.log.String(), "redis unreachable"); n != 1 {
		t.Errorf("%d lines for one outage, want 1:\n%s", n, a.log)
	}

	srv.Start()
	waitUp(t, a, true)
	waitUp(t, b, true)
	if n := strings.Count(a.log.String(), "redis reachable again"); n != 1 {
		t.Errorf("%d lines for the outage's end, want 1:\n%s", n, a.log)
	}
	if !strings.Contains(a.log.String(), "answered_locally=") {
		t.Errorf("the outage's end says not how many calls were answered locally:\n%s", a.log)
	}
	if seen(t, a, "k after") {
		t.Fatal("first use after the outage is a replay")
	}
	if !seen(t, b, "k after") {
		t.Error("after the outage, a nonce seen at a is no replay at b")
	}
	a.obs.mu.Lock()
	defer a.obs.mu.Unlock()
	if want := []bool{true, false, true}; !equal(a.obs.ups, want) {
		t.Errorf("observed states %v, want %v", a.obs.ups, want)
	}
}

func equal(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestNoncesSlowRedis: Redis paused (CLIENT PAUSE) for longer than the
// timeout: the call ends at the timeout, the nonce is answered locally,
// and Redis is taken back once it answers in time again.
func TestNoncesSlowRedis(t *testing.T) {
	srv := testutil.StartRedis(t)
	a := openTimeout(t, srv.URL, 100*time.Millisecond)
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer raw.Close()
	if err := raw.Do(context.Background(), "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	if seen(t, a, "k slow") {
		t.Fatal("a first nonce is a replay")
	}
	a.obs.mu.Lock()
	var deadline bool
	for _, err := range a.obs.errs {
		var ne net.Error
		deadline = deadline || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
	}
	a.obs.mu.Unlock()
	if !deadline {
		t.Errorf("no call ended at its deadline: %v", a.obs.errs)
	}
	if !seen(t, a, "k slow") {
		t.Error("a nonce answered locally is no replay locally")
	}
	waitUp(t, a, true)
	if !seen(t, a, "k slow") {
		t.Error("a nonce seen while redis was slow is no replay after")
	}
}

// TestOpenURL: what Open takes and what it refuses, naming the URL
// without its password.
func TestOpenURL(t *testing.T) {
	for _, tc := range []struct{ url, err string }{
		{"http://localhost:6379", `redis URL "http://localhost:6379": redis: invalid URL scheme: http`},
		{"redis://:secret@localhost:6379?pool_sise=3", `redis URL "redis://:xxxxx@localhost:6379?pool_sise=3": redis: unexpected option: pool_sise`},
		{"redis://localhost:26379?master_name=", `redis URL "redis://localhost:26379?master_name=": master_name is empty`},
		{"unix:///run/redis.sock?master_name=m", `redis URL "unix:///run/redis.sock?master_name=m": a Sentinel URL is redis:// or rediss://, not "unix://"`},
		{"redis://localhost:6379?addr=nohost", `redis URL "redis://localhost:6379?addr=nohost": redis: unable to parse addr param: nohost`},
		// Unparsable: the password is in no part of the message.
		{"redis://user:secret@localhost:63x79", `redis URL (unparsable URL): invalid port ":63x79" after host`},
	} {
		_, err := Open(Config{URL: tc.url})
		if err == nil || err.Error() != tc.err {
			t.Errorf("Open(%q): %v, want %s", tc.url, err, tc.err)
		}
	}
}

// TestUnixSocket: unix:// reaches a redis-server on its socket.
func TestUnixSocket(t *testing.T) {
	sock := t.TempDir() + "/redis.sock"
	testutil.StartRedis(t, "--unixsocket", sock)
	a, b := open(t, "unix://"+sock), open(t, "unix://"+sock+"?db=0")
	if !a.r.Up() {
		t.Fatalf("not up over %s:\n%s", sock, a.log)
	}
	if seen(t, a, "k unix") || !seen(t, b, "k unix") {
		t.Error("a nonce seen at a is no replay at b, over a unix socket")
	}
}

// TestTLS: rediss:// verifies the server against the roots given, and
// fails against others (the state then stays local, logged).
func TestTLS(t *testing.T) {
	// redis-server and the client read the wall clock.
	p := testpki.NewAt(t, time.Now())
	srv := testutil.StartRedisTLS(t, p.ServerCert, p.ServerKey)
	roots, err := certs.LoadPool(p.RootCA)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{log: &testutil.Buffer{}, obs: &observer{}}
	r, err := Open(Config{URL: srv.URL, RootCAs: roots, Logger: slog.New(slog.NewTextHandler(in.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if !r.Up() {
		t.Fatalf("not up over TLS:\n%s", in.log)
	}
	in.r, in.nonces = r, r.Nonces(webbotauth.NewMemoryNonces(0, nil))
	if seen(t, in, "k tls") || !seen(t, in, "k tls") {
		t.Error("nonces over TLS: a first use is a replay, or a replay is not")
	}

	// The system roots do not know the test CA.
	var log testutil.Buffer
	r2, err := Open(Config{URL: srv.URL, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if r2.Up() || !strings.Contains(log.String(), "certificate signed by unknown authority") {
		t.Errorf("a server the roots do not vouch for: up %v\n%s", r2.Up(), log.String())
	}
	if _, err := Open(Config{URL: "redis://" + srv.Addr, RootCAs: roots}); err == nil || !strings.Contains(err.Error(), "go with rediss://") {
		t.Errorf("roots with redis://: %v", err)
	}
}

// TestSentinel: a master_name URL reaches the master a Sentinel monitors.
func TestSentinel(t *testing.T) {
	master := testutil.StartRedis(t)
	sentinel := testutil.StartSentinel(t, master.Addr, "fleet")
	a := open(t, "redis://"+sentinel.Addr+"?master_name=fleet")
	b := open(t, master.URL)
	if !a.r.Up() {
		t.Fatalf("not up through the Sentinel:\n%s", a.log)
	}
	if seen(t, a, "k sentinel") || !seen(t, b, "k sentinel") {
		t.Error("a nonce seen through the Sentinel is not in its master")
	}
}

// TestCluster: a URL with addr parameters is a Cluster; nonces and
// buckets land on the nodes their keys hash to.
func TestCluster(t *testing.T) {
	var nodes []*testutil.RedisServer
	for range 3 {
		nodes = append(nodes, testutil.StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"))
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli (Debian package redis-tools, with redis-server) not found")
	}
	args := []string{"--cluster", "create"}
	for _, n := range nodes {
		args = append(args, n.Addr)
	}
	if out, err := exec.Command(cli, append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	url := nodes[0].URL + "?addr=" + nodes[1].Addr + "&addr=" + nodes[2].Addr
	// Every node must say the cluster is ok: each learns it on its own,
	// and one that has not yet answers CLUSTERDOWN.
	for _, n := range nodes {
		raw := redis.NewClient(&redis.Options{Addr: n.Addr})
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			info, _ := raw.ClusterInfo(context.Background()).Result()
			if strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s: the cluster is not ok after 20 s:\n%s", n.Addr, info)
			}
		}
		raw.Close()
	}
	a, b := open(t, url), open(t, url)
	if !a.r.Up() {
		t.Fatalf("not up on the cluster:\n%s", a.log)
	}
	for i := range 20 {
		k := fmt.Sprint("k cluster ", i)
		if seen(t, a, k) || !seen(t, b, k) {
			t.Errorf("nonce %q: a first use is a replay, or a replay at b is not", k)
		}
	}
	// One script cannot span the nodes: the nonce is checked alone and
	// the rules take their tokens themselves.
	if replayed, taken := seenAhead(t, a, "k cluster ahead", "https://x.example", []policy.Take{{Key: "x", Rate: 1, Burst: 1}}); replayed || len(taken) != 0 {
		t.Errorf("on a cluster: replayed %v, taken %+v; want a new nonce and no token taken ahead", replayed, taken)
	}
	la, lb := a.r.Limiter(0), b.r.Limiter(0)
	now := time.Now()
	if ok, _ := la.Take("bot", 1, 1, now); !ok {
		t.Error("the first take on the cluster refused")
	}
	if ok, _ := lb.Take("bot", 1, 1, now); ok {
		t.Error("b took a token a took from the cluster's bucket")
	}
	if len(a.obs.errs) != 0 {
		t.Errorf("errors on the cluster: %v", a.obs.errs)
	}
}

// TestACL: a Redis user allowed the commands this package sends, on its
// keys alone, is enough (the ACL docs/fleet.md gives), and the password
// in the URL is used.
func TestACL(t *testing.T) {
	srv := testutil.StartRedis(t)
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer raw.Close()
	acl := strings.Fields("ACL SETUSER reqmtls on >s3cret ~reqmtls:* resetchannels -@all +hello +set +evalsha +eval +hmget +hset +pexpire")
	args := make([]any, len(acl))
	for i, a := range acl {
		args[i] = a
	}
	if err := raw.Do(context.Background(), args...).Err(); err != nil {
		t.Fatal(err)
	}
	in := open(t, "redis://reqmtls:s3cret@"+srv.Addr)
	if !in.r.Up() {
		t.Fatalf("not up as the ACL user:\n%s", in.log)
	}
	if seen(t, in, "k acl") || !seen(t, in, "k acl") {
		t.Error("nonces as the ACL user: a first use is a replay, or a replay is not")
	}
	l := in.r.Limiter(0)
	now := time.Now()
	if ok, _ := l.Take("bot", 1, 1, now); !ok {
		t.Error("the first take as the ACL user refused")
	}
	if ok, _ := l.Take("bot", 1, 1, now); ok {
		t.Error("a take past the burst as the ACL user admitted")
	}
	// The nonce and a token in one script: its commands are the user's.
	if replayed, taken := seenAhead(t, in, "k acl ahead", "https://x.example", []policy.Take{{Key: "bot2", Rate: 1, Burst: 1}}); replayed || len(taken) != 1 || !taken[0].OK {
		t.Errorf("a nonce and a token in one script as the ACL user: replayed %v, taken %+v", replayed, taken)
	}
	if len(in.obs.errs) != 0 {
		t.Errorf("errors as the ACL user: %v", in.obs.errs)
	}
	// A wrong password: refused at start, so the state is local.
	bad := open(t, "redis://reqmtls:wrong@"+srv.Addr)
	if bad.r.Up() || !strings.Contains(bad.log.String(), "WRONGPASS") {
		t.Errorf("a wrong password: up %v\n%s", bad.r.Up(), bad.log)
	}
	if strings.Contains(bad.log.String(), "wrong@") {
		t.Errorf("the password is in the log:\n%s", bad.log)
	}
}

// TestRedisFull: a Redis out of memory under noeviction answers but
// refuses writes: the nonces fall back to the local store, with one log
// line, and Redis is not taken back while it still refuses them (its
// ping is a write), only once it takes them again.
func TestRedisFull(t *testing.T) {
	srv := testutil.StartRedis(t, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
	a := open(t, srv.URL)
	i := 0
	for ; a.r.Up() && i < 100000; i++ {
		if seen(t, a, fmt.Sprint("k full ", i)) {
			t.Fatalf("nonce %d: a first use is a replay", i)
		}
	}
	if a.r.Up() {
		t.Fatalf("still up after %d nonces in 2 MB", i)
	}
	a.obs.mu.Lock()
	oom := len(a.obs.errs) > 0 && strings.Contains(a.obs.errs[0].Error(), "OOM")
	a.obs.mu.Unlock()
	if !oom {
		t.Fatalf("the first error is not Redis's OOM: %v", a.obs.errs)
	}
	// Filled to its bound, Redis takes a write now and then as its
	// buffers shrink; with the bound 300 KB under what it holds it
	// refuses every one (and takes them again once the nonces are gone:
	// they hold about 1 MB).
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer raw.Close()
	mem, err := raw.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var used int
	for _, line := range strings.Split(mem, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			used, _ = strconv.Atoi(v)
		}
	}
	if used < 1<<20 {
		t.Fatalf("used_memory %d when full, want over 1 MB (INFO memory:\n%s)", used, mem)
	}
	if err := raw.ConfigSet(context.Background(), "maxmemory", strconv.Itoa(used-300<<10)).Err(); err != nil {
		t.Fatal(err)
	}
	// Three pings later, still down and one line: no flapping.
	pings := func() int { a.obs.mu.Lock(); defer a.obs.mu.Unlock(); return a.obs.calls["ping"] }
	for p := pings(); pings() < p+3; time.Sleep(10 * time.Millisecond) {
	}
	if a.r.Up() {
		t.Error("taken back while Redis refuses writes")
	}
	if n := strings.Count(a.log.String(), "redis unreachable"); n != 1 {
		t.Errorf("%d lines for one outage, want 1:\n%s", n, a.log)
	}
	if !seen(t, a, "k full 0") {
		t.Error("a nonce seen before Redis filled is no replay locally")
	}
	if err := raw.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	waitUp(t, a, true)
	t.Logf("redis full after %d nonces in 2 MB, back once flushed", i)
}

// TestPooledConnClosedByRedis: a pooled connection Redis closed (its
// timeout, CLIENT KILL, a restart) is found before use and replaced, not
// used and failed: no call fails, no outage is logged; also when the close
// comes right after an answer, and over TLS. (The connections are read
// and written with raw calls; go-redis's check before use must still see
// the close, under TLS too.) The background ping is kept out of the way:
// a ping under way when CLIENT KILL comes fails, as any call would.
func TestPooledConnClosedByRedis(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		srv := testutil.StartRedis(t)
		in := openConfig(t, Config{URL: srv.URL, PingInterval: time.Hour, Timeout: time.Second})
		killPooled(t, in, redis.NewClient(&redis.Options{Addr: srv.Addr}))
	})
	t.Run("tls", func(t *testing.T) {
		p := testpki.NewAt(t, time.Now()) // redis-server reads the wall clock
		srv := testutil.StartRedisTLS(t, p.ServerCert, p.ServerKey)
		roots, err := certs.LoadPool(p.RootCA)
		if err != nil {
			t.Fatal(err)
		}
		in := openConfig(t, Config{URL: srv.URL, RootCAs: roots, PingInterval: time.Hour, Timeout: time.Second})
		killPooled(t, in, redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}))
	})
}

// TestTLSDialledAhead: connections go-redis dials ahead of use over TLS
// (min_idle_conns; pool_fifo, so that calls take those first) are used,
// not taken for out of step and dialled again on every call: the session
// tickets Redis sends after a TLS 1.3 handshake are read when the
// connection is made (settle). Without that: "20 calls one at a time
// made 18 new connections".
func TestTLSDialledAhead(t *testing.T) {
	p := testpki.NewAt(t, time.Now()) // redis-server reads the wall clock
	srv := testutil.StartRedisTLS(t, p.ServerCert, p.ServerKey)
	roots, err := certs.LoadPool(p.RootCA)
	if err != nil {
		t.Fatal(err)
	}
	in := openConfig(t, Config{URL: srv.URL + "?min_idle_conns=3&pool_fifo=true", RootCAs: roots, PingInterval: time.Hour, Timeout: time.Second})
	raw := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}})
	defer raw.Close()
	dials := func() int {
		stats, err := raw.Info(context.Background(), "stats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(stats, "\r\n") {
			if v, ok := strings.CutPrefix(line, "total_connections_received:"); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		t.Fatalf("no total_connections_received in INFO stats:\n%s", stats)
		return 0
	}
	time.Sleep(200 * time.Millisecond) // the connections dialled ahead
	before := dials()
	for i := range 20 {
		if seen(t, in, fmt.Sprint("k ", i)) {
			t.Fatal("a new nonce is a replay")
		}
	}
	if n := dials() - before; n > 3 {
		t.Errorf("20 calls one at a time made %d new connections to Redis, want at most the 3 kept idle", n)
	}
	in.obs.mu.Lock()
	defer in.obs.mu.Unlock()
	if len(in.obs.errs) != 0 {
		t.Errorf("calls failed: %v\n%s", in.obs.errs, in.log)
	}
}

// killPooled has raw kill in's connections to Redis between its calls,
// five times after 100 ms and five times at once, and checks that none of
// in's calls failed.
func killPooled(t *testing.T, in *instance, raw *redis.Client) {
	defer raw.Close()
	for i := range 10 {
		if seen(t, in, fmt.Sprint("k before ", i)) {
			t.Fatal("a new nonce is a replay")
		}
		killed, err := raw.ClientKillByFilter(context.Background(), "TYPE", "normal", "SKIPME", "yes").Result()
		if err != nil || killed == 0 {
			t.Fatalf("CLIENT KILL: %d killed, %v", killed, err)
		}
		if i < 5 {
			time.Sleep(100 * time.Millisecond)
		} // else at once: Redis closes the connection before it answers CLIENT KILL
		if seen(t, in, fmt.Sprint("k after ", i)) {
			t.Fatal("a new nonce is a replay")
		}
	}
	in.obs.mu.Lock()
	defer in.obs.mu.Unlock()
	if len(in.obs.errs) != 0 || strings.Contains(in.log.String(), "unreachable") || !in.r.Up() {
		t.Errorf("calls failed on connections Redis closed: %v\n%s", in.obs.errs, in.log)
	}
}
