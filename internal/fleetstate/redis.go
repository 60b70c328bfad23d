// Package fleetstate keeps the state a fleet of servers shares in Redis:
// the nonces of verified signatures (so that a signature replayed at
// another instance is refused) and the token buckets of rate limits (so
// that N instances together admit the configured rate, not N times it).
//
// Redis is never in a request's way: every call is bounded by a timeout
// (50 ms by default), and when Redis is slow or unreachable each piece of
// state falls back to this process's own (nonces to a local store, buckets
// to local ones) until a background ping finds Redis again. The callers
// cannot tell which they got, except through the Observer.
package fleetstate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultTimeout bounds each Redis call of a request.
const DefaultTimeout = 50 * time.Millisecond

// DefaultPingInterval is how often Redis is pinged, to see an outage
// without traffic and its end without a restart.
const DefaultPingInterval = time.Second

// Config configures a Redis connection.
type Config struct {
	// URL names the server:
	//
	//	redis://[user:password@]host:port[/db]   plain TCP
	//	rediss://[user:password@]host:port[/db]  TLS
	//	unix://[user:password@]/path/to/redis.sock[?db=N]
	//
	// and, as go-redis's URLs take them, a Redis Cluster by its seed
	// nodes (redis://host:port?addr=host2:port2&addr=host3:port3) or the
	// Sentinels of a monitored master
	// (redis://sentinel1:26379?addr=sentinel2:26379&master_name=NAME,
	// the user and password being the master's). go-redis's other
	// query parameters (pool_size, dial_timeout, ...) pass through.
	URL string
	// RootCAs verifies a rediss:// server (default: the system roots).
	RootCAs *x509.CertPool
	// Timeout bounds every Redis call made for a request (default
	// DefaultTimeout): past it, the call's answer comes from local state.
	Timeout time.Duration
	// PingInterval is how often the background ping runs (default
	// DefaultPingInterval).
	PingInterval time.Duration
	// Prefix starts every key (default "reqmtls:"), for sites that share
	// one Redis.
	Prefix string
	// Logger receives one line when Redis becomes unreachable and one when
	// it is back (default slog.Default()).
	Logger *slog.Logger
}

// An Observer is told of Redis's state and of every call, for metrics.
// Its methods must be safe for concurrent use.
type Observer interface {
	// Up is called with Redis's state when it changes, and once when the
	// observer is set.
	Up(up bool)
	// Call reports one call: op is "nonce", "limit" or "ping", err its
	// failure (nil when Redis answered).
	Call(op string, took time.Duration, err error)
}

// Redis is a connection to the fleet's Redis, with its state (up or
// down) kept by a background ping. It is safe for concurrent use.
type Redis struct {
	client   redis.UniversalClient
	pipe     *pipeline // the requests' calls
	timeout  time.Duration
	interval time.Duration
	prefix   string
	log      *slog.Logger
	cluster  bool // a Cluster: a script's keys must share a node

	up atomic.Bool

	mu        sync.Mutex // orders state changes and their reports
	observer  atomic.Pointer[Observer]
	downSince time.Time
	fallbacks atomic.Int64 // calls answered locally in this outage

	stop chan struct{}
	done chan struct{}
}

// Open parses cfg.URL and connects: it pings once (bounded by a second) and
// starts the background ping. Redis unreachable at start is not an error:
// the state is local until it answers (logged). Close stops it.
func Open(cfg Config) (*Redis, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "reqmtls:"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	client, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	setLogger.Do(func() { redis.SetLogger(clientLog{cfg.Logger}) })
	_, cluster := client.(*redis.ClusterClient)
	r := &Redis{client: client, pipe: newPipeline(client, cfg.Timeout), cluster: cluster, timeout: cfg.Timeout, interval: cfg.PingInterval, prefix: cfg.Prefix,
		log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), max(time.Second, cfg.Timeout))
	err = r.probe(ctx)
	cancel()
	if err == nil {
		r.up.Store(true)
		r.log.Info("redis: connected, nonces and limits shared by the fleet", "redis", redactURL(cfg.URL))
	} else {
		r.downSince = time.Now()
		r.log.Warn("redis unreachable: nonces and limits are this instance's own until it answers",
			"redis", redactURL(cfg.URL), "err", err)
	}
	go r.pinger()
	return r, nil
}

// newClient makes go-redis's client for the URL: one server, a Cluster or
// a Sentinel-monitored master.
func newClient(cfg Config) (redis.UniversalClient, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url.Error repeats the URL, password and all: its reason alone.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redis URL (unparsable URL): %w", err)
	}
	q := u.Query()
	bad := func(err error) error { return fmt.Errorf("redis URL %q: %w", redactURL(cfg.URL), err) }
	if cfg.RootCAs != nil && u.Scheme != "rediss" {
		return nil, bad(errors.New("roots for the server's certificate go with rediss:// (TLS) alone"))
	}
	// Every call is bounded by its context (Timeout) and never retried:
	// a request waits for one try at most, then falls back.
	tlsConf := func(c *tls.Config) *tls.Config {
		if c != nil && cfg.RootCAs != nil {
			c.RootCAs = cfg.RootCAs
		}
		return c
	}
	switch {
	case q.Has("master_name"):
		if u.Scheme != "redis" && u.Scheme != "rediss" {
			return nil, bad(fmt.Errorf("a Sentinel URL is redis:// or rediss://, not %q", u.Scheme+"://"))
		}
		master := q.Get("master_name")
		if master == "" {
			return nil, bad(errors.New("master_name is empty"))
		}
		q.Del("master_name")
		db := 0
		if p := u.Path; p != "" && p != "/" {
			if _, err := fmt.Sscanf(p, "/%d", &db); err != nil {
				return nil, bad(fmt.Errorf("database %q is not a number", p))
			}
			u.Path = ""
		}
		u.RawQuery = q.Encode()
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, bad(err)
		}
		tc := tlsConf(o.TLSConfig)
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: master, SentinelAddrs: o.Addrs,
			Username: o.Username, Password: o.Password, DB: db,
			TLSConfig: tc, ContextTimeoutEnabled: true, MaxRetries: -1,
			DialTimeout: o.DialTimeout, PoolSize: o.PoolSize, DisableIdentity: true,
			Dialer: dialer(o.DialTimeout, tc),
		}), nil
	case q.Has("addr"):
		o, err := redis.ParseClusterURL(cfg.URL)
		if err != nil {
			return nil, bad(err)
		}
		o.TLSConfig = tlsConf(o.TLSConfig)
		o.ContextTimeoutEnabled, o.MaxRetries, o.DisableIdentity = true, -1, true
		o.Dialer = dialer(o.DialTimeout, o.TLSConfig)
		return redis.NewClusterClient(o), nil
	default:
		o, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, bad(err)
		}
		o.TLSConfig = tlsConf(o.TLSConfig)
		o.ContextTimeoutEnabled, o.MaxRetries, o.DisableIdentity = true, -1, true
		o.Dialer = dialer(o.DialTimeout, o.TLSConfig)
		return redis.NewClient(o), nil
	}
}

// setLogger gives go-redis's own messages (one process-wide logger: the
// first Open's) to slog.
var setLogger sync.Once

// clientLog logs go-redis's messages (a Sentinel's lookups, a Cluster's
// node states) at debug level: under an outage they may come once a try,
// and the outage has its own two lines.
type clientLog struct{ log *slog.Logger }

func (l clientLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}

// redactURL is u without its password, for logs and errors.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// SetObserver sets the observer of Redis's state and calls, and tells it
// the state now.
func (r *Redis) SetObserver(o Observer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.observer.Store(&o)
	if o != nil {
		o.Up(r.up.Load())
	}
}

func (r *Redis) observe() Observer {
	if o := r.observer.Load(); o != nil {
		return *o
	}
	return nil
}

// Up reports whether Redis is in use: it answered the last call or ping.
func (r *Redis) Up() bool { return r.up.Load() }

// Close stops the background ping and closes the connections.
func (r *Redis) Close() error {
	select {
	case <-r.stop:
	default:
		close(r.stop)
		<-r.done
		r.pipe.close()
	}
	return r.client.Close()
}

// probe asks whether Redis takes this server's writes: a key of its own,
// set for a few seconds. A PING alone would take back a Redis that answers
// but refuses writes (out of memory under noeviction, a read-only
// replica), only to find it failing again at the next request.
func (r *Redis) probe(ctx context.Context) error {
	return r.client.Set(ctx, r.prefix+"probe", "1", 10*time.Second).Err()
}

// pinger probes Redis every interval, bounded by the request timeout: a
// Redis too slow for requests is not taken back.
func (r *Redis) pinger() {
	defer close(r.done)
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		start := time.Now()
		err := r.probe(ctx)
		cancel()
		if o := r.observe(); o != nil {
			o.Call("ping", time.Since(start), err)
		}
		if err != nil {
			r.failed(err)
		} else {
			r.answered()
		}
	}
}

// Sent is how many sends to Redis the requests' nonce and limit calls
// have made, and how many calls they carried: a call made at once is a
// send of its own, a batch of calls made together one send (a script
// loaded again, or a Cluster's batch split by node, is not counted
// apart). Calls answered locally without a send are not counted; the
// background ping is not either.
func (r *Redis) Sent() (sends, calls int64) { return r.pipe.sends.Load(), r.pipe.calls.Load() }

// call runs f under the request timeout and reports it; an error marks
// Redis down.
func (r *Redis) call(ctx context.Context, op string, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	if o := r.observe(); o != nil {
		o.Call(op, time.Since(start), err)
	}
	if err != nil && !errors.Is(err, errQueueFull) {
		// A full queue is this instance's burst, not Redis's failure:
		// the call is answered locally, Redis stays in use.
		r.failed(err)
	}
	return err
}

// failed marks Redis down, logging the outage's start once.
func (r *Redis) failed(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.up.Load() {
		return
	}
	r.up.Store(false)
	r.downSince = time.Now()
	r.fallbacks.Store(0)
	r.log.Warn("redis unreachable: nonces and limits are this instance's own until it answers", "err", err)
	if o := r.observe(); o != nil {
		o.Up(false)
	}
}

// answered marks Redis up, logging the outage's end once.
func (r *Redis) answered() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.up.Load() {
		return
	}
	r.up.Store(true)
	r.log.Info("redis reachable again: nonces and limits shared by the fleet",
		"down_for", time.Since(r.downSince).Round(time.Millisecond).String(), "answered_locally", r.fallbacks.Load())
	if o := r.observe(); o != nil {
		o.Up(true)
	}
}

// local counts a call answered locally while Redis is down.
func (r *Redis) local() { r.fallbacks.Add(1) }
