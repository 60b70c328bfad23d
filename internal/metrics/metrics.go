// Package metrics is the server's Prometheus instrumentation: connections,
// handshakes and their outcome, failures by reason, ClientHello
// rejections, reloads, certificate expiry, and the gateway's origin
// requests. Names follow Prometheus conventions (reqmtls_..._total for
// counters, _seconds for durations); label values come from small fixed
// sets, never from client input, so cardinality stays bounded.
package metrics

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/clienthello"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// Metrics holds the server's collectors in a registry of its own.
type Metrics struct {
	reg *prometheus.Registry

	connsOpen         prometheus.Gauge
	handshakes        *prometheus.CounterVec
	failures          *prometheus.CounterVec
	handshakeDuration prometheus.Histogram
	helloRejections   *prometheus.CounterVec
	reloads           *prometheus.CounterVec
	upstreamRequests  *prometheus.CounterVec
	webBotAuth        *prometheus.CounterVec
	rules             *prometheus.CounterVec
	upstreamDuration  prometheus.Histogram
}

// New registers the collectors; certs, if not nil, is read at every scrape
// for certificate expiry (the server certificates of every site, and the
// roots of their stores), and so are inFlight (handshakes in progress) and
// helloBytes (bytes held for ClientHellos), when not nil.
func New(certs func() (servers []*x509.Certificate, roots map[string][]*x509.Certificate), crls func() []auth.CRLInfo, inFlight, helloBytes func() float64) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.connsOpen = prometheus.NewGauge(prometheus.GaugeOpts{Name: "reqmtls_connections_open",
		Help: "Connections accepted and not yet closed."})
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_handshakes_total",
		Help: "Completed TLS handshakes, by whether the client set flag 80, whether a certificate was requested, the certificate's outcome (none, valid, invalid), TLS version and resumption."},
		[]string{"flagged", "cert_requested", "cert", "version", "resumed"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_handshake_failures_total",
		Help: "Failed TLS handshakes, by reason (the alert sent, or what ended the connection)."},
		[]string{"reason"})
	m.handshakeDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reqmtls_handshake_duration_seconds",
		Help:    "Time from accepting a connection to the end of its successful TLS handshake.",
		Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}})
	m.helloRejections = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_clienthello_rejections_total",
		Help: "ClientHellos refused by the inspection layer before crypto/tls saw them, by reason."},
		[]string{"reason"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_reloads_total",
		Help: "Reloads of each part (server certificate, client CA bundle, bot CA bundle, session ticket keys), by result."},
		[]string{"part", "result"})
	m.upstreamRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_upstream_requests_total",
		Help: "Requests the gateway sent to the origin, by response status code (error when none came)."},
		[]string{"code"})
	m.upstreamDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "reqmtls_upstream_request_duration_seconds",
		Help:    "Time from sending a request to the origin to its response header.",
		Buckets: prometheus.DefBuckets})
	m.webBotAuth = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_web_bot_auth_requests_total",
		Help: "Requests by the verdict on their Web Bot Auth signature: none, valid or invalid."}, []string{"status"})
	m.rules = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_rule_requests_total",
		Help: "Requests a rule decided, by rule name, action, whether the rule is a shadow, and result: refused (the rule answered, or a shadow would have) or passed."},
		[]string{"rule", "action", "shadow", "result"})
	for _, c := range []prometheus.Collector{m.connsOpen, m.handshakes, m.failures, m.handshakeDuration, m.helloRejections,
		m.reloads, m.upstreamRequests, m.upstreamDuration, m.webBotAuth, m.rules} {
		f(c)
	}
	if crls != nil {
		f(newCRLCollector(crls))
	}
	if inFlight != nil {
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "reqmtls_handshakes_in_progress",
			Help: "Connections accepted whose TLS handshake has not ended (bounded by -max-handshakes)."}, inFlight))
	}
	if helloBytes != nil {
		f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "reqmtls_clienthello_buffered_bytes",
			Help: "Bytes held for ClientHellos being read and replayed (bounded by -max-hello-memory)."}, helloBytes))
	}
	if certs != nil {
		f(&expiry{certs: certs, desc: prometheus.NewDesc("reqmtls_certificate_not_after_seconds",
			"End of validity (Unix time) of the server certificate and of every root in the client and bot stores.",
			[]string{"role", "subject"}, nil)})
	}
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ConnOpened and ConnClosed track open connections.
func (m *Metrics) ConnOpened() { m.connsOpen.Inc() }
func (m *Metrics) ConnClosed() { m.connsOpen.Dec() }

// Handshake counts a completed handshake.
func (m *Metrics) Handshake(flagged bool, d *auth.Decision, version string, resumed bool, took time.Duration) {
	requested, cert := false, "none"
	if d != nil {
		requested = d.Requested
		if len(d.Chain) > 0 {
			cert = "valid"
			if d.Err != nil {
				cert = "invalid"
			}
		}
	}
	m.handshakes.WithLabelValues(strconv.FormatBool(flagged), strconv.FormatBool(requested), cert, version, strconv.FormatBool(resumed)).Inc()
	m.handshakeDuration.Observe(took.Seconds())
}

// HandshakeFailed counts a failed handshake by reason, and a refusal by the
// inspection layer as a ClientHello rejection too.
func (m *Metrics) HandshakeFailed(err error) {
	reason := FailureReason(err)
	m.failures.WithLabelValues(reason).Inc()
	var fe *clienthello.FlagsError
	switch {
	case errors.As(err, &fe):
		r := "tls_flags_malformed"
		if strings.Contains(fe.Reason, "HelloRetryRequest") {
			r = "tls_flags_changed_after_hello_retry"
		}
		m.helloRejections.WithLabelValues(r).Inc()
	case errors.Is(err, clienthello.ErrTooLarge):
		m.helloRejections.WithLabelValues("too_large").Inc()
	case errors.Is(err, clienthello.ErrBusy):
		m.helloRejections.WithLabelValues("memory_bound").Inc()
	}
}

// HandshakeRefused counts a connection closed at once because as many
// handshakes as allowed were in progress.
func (m *Metrics) HandshakeRefused() {
	m.failures.WithLabelValues("too_many_handshakes").Inc()
}

// FailureReason names why a handshake failed, from a fixed set.
func FailureReason(err error) string {
	var fe *clienthello.FlagsError
	var re tls.RecordHeaderError
	var ne net.Error
	msg := err.Error()
	switch {
	case errors.As(err, &fe):
		return "illegal_parameter"
	case errors.Is(err, clienthello.ErrTooLarge):
		return "decode_error"
	case errors.Is(err, clienthello.ErrBusy):
		return "internal_error"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "closed"
	case strings.Contains(msg, "client didn't provide a certificate"):
		return "certificate_required"
	case strings.Contains(msg, "client certificate rejected"):
		return "bad_certificate"
	case strings.Contains(msg, "first record does not look like a TLS handshake"), errors.As(err, &re):
		return "not_tls"
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "protocol version"):
		return "protocol_version"
	case strings.Contains(msg, "no cipher suite"), strings.Contains(msg, "no mutually supported"), strings.Contains(msg, "no ECDHE curve"):
		return "handshake_failure"
	case strings.Contains(msg, "remote error"):
		return "alert_received"
	case strings.Contains(msg, "connection reset"), strings.Contains(msg, "broken pipe"):
		return "reset"
	case strings.Contains(msg, "PROXY"), strings.Contains(msg, "proxy"):
		return "proxy_protocol"
	}
	return "other"
}

// WebBotAuth counts a request's signature verdict.
func (m *Metrics) WebBotAuth(status string) { m.webBotAuth.WithLabelValues(status).Inc() }

// Rule counts a request a rule decided (or, shadow, would have).
func (m *Metrics) Rule(name, action string, shadow, refused bool) {
	result := "passed"
	if refused {
		result = "refused"
	}
	m.rules.WithLabelValues(name, action, strconv.FormatBool(shadow), result).Inc()
}

// Reload counts a reload of one part.
func (m *Metrics) Reload(part string, err error) {
	m.reloads.WithLabelValues(strings.ReplaceAll(part, " ", "_"), reloadResult(err)).Inc()
}

func reloadResult(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// Upstream counts a gateway request to the origin: status 0 for none.
func (m *Metrics) Upstream(status int, took time.Duration) {
	code := "error"
	if status > 0 {
		code = strconv.Itoa(status)
	}
	m.upstreamRequests.WithLabelValues(code).Inc()
	m.upstreamDuration.Observe(took.Seconds())
}

// expiry reports certificates' not-after times at scrape time.
type expiry struct {
	certs func() (servers []*x509.Certificate, roots map[string][]*x509.Certificate)
	desc  *prometheus.Desc
}

func (e *expiry) Describe(ch chan<- *prometheus.Desc) { ch <- e.desc }

func (e *expiry) Collect(ch chan<- prometheus.Metric) {
	servers, roots := e.certs()
	seen := map[[2]string]bool{}
	emit := func(role string, c *x509.Certificate) {
		key := [2]string{role, c.Subject.String()}
		if seen[key] {
			return // two of one subject (a root two sites share): the first
		}
		seen[key] = true
		ch <- prometheus.MustNewConstMetric(e.desc, prometheus.GaugeValue, float64(c.NotAfter.Unix()), role, c.Subject.String())
	}
	for _, c := range servers {
		if c != nil {
			emit("server", c)
		}
	}
	for role, rs := range roots {
		for _, c := range rs {
			emit(role+"_root", c)
		}
	}
}

func newCRLCollector(crls func() []auth.CRLInfo) *crlCollector {
	return &crlCollector{crls: crls,
		next: prometheus.NewDesc("reqmtls_crl_next_update_seconds",
			"nextUpdate (Unix time) of each client CRL in force, by issuer: past it, certificates of that issuer do not validate (alert well before).",
			[]string{"issuer"}, nil),
		revoked: prometheus.NewDesc("reqmtls_crl_revoked_certificates",
			"Certificates listed in each client CRL in force, by issuer.", []string{"issuer"}, nil)}
}

// crlCollector reports the CRLs in force at each scrape.
type crlCollector struct {
	crls          func() []auth.CRLInfo
	next, revoked *prometheus.Desc
}

func (c *crlCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.next; ch <- c.revoked }

func (c *crlCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	for _, i := range c.crls() {
		if seen[i.Issuer] {
			continue // a CRL two sites share: once
		}
		seen[i.Issuer] = true
		if !i.NextUpdate.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.next, prometheus.GaugeValue, float64(i.NextUpdate.Unix()), i.Issuer)
		}
		ch <- prometheus.MustNewConstMetric(c.revoked, prometheus.GaugeValue, float64(i.Revoked), i.Issuer)
	}
}

// AuthMetrics are the metrics of an Authenticator used on its own (the
// library's users with servers of their own): decisions, reloads, and the
// expiry of certificates and CRLs. It is a prometheus.Collector to register
// in the user's registry.
type AuthMetrics struct {
	decisions *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	others    []prometheus.Collector
}

// NewAuth makes an Authenticator's metrics; certs and crls are read at
// every scrape.
func NewAuth(certs func() (*x509.Certificate, map[string][]*x509.Certificate), crls func() []auth.CRLInfo) *AuthMetrics {
	m := &AuthMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_decisions_total",
			Help: "Client-auth decisions made in handshakes, by whether the client set flag 80, whether a certificate was requested, the certificate's outcome (none, valid, invalid) and resumption."},
			[]string{"flagged", "cert_requested", "cert", "resumed"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_reloads_total",
			Help: "Reloads of each part (server certificate, client CA bundle, bot CA bundle, session ticket keys, client CRL), by result."},
			[]string{"part", "result"}),
	}
	one := func() ([]*x509.Certificate, map[string][]*x509.Certificate) {
		server, roots := certs()
		return []*x509.Certificate{server}, roots
	}
	m.others = append(m.others, &expiry{certs: one, desc: prometheus.NewDesc("reqmtls_certificate_not_after_seconds",
		"End of validity (Unix time) of the server certificate and of every root in the client and bot stores.",
		[]string{"role", "subject"}, nil)})
	m.others = append(m.others, newCRLCollector(crls))
	return m
}

// Decision counts one handshake's decision.
func (m *AuthMetrics) Decision(d *auth.Decision) {
	cert := "none"
	if len(d.Chain) > 0 {
		cert = "valid"
		if d.Err != nil {
			cert = "invalid"
		}
	}
	m.decisions.WithLabelValues(strconv.FormatBool(d.Flagged), strconv.FormatBool(d.Requested), cert, strconv.FormatBool(d.Resumed)).Inc()
}

// Reload counts a reload of one part.
func (m *AuthMetrics) Reload(part string, err error) {
	m.reloads.WithLabelValues(strings.ReplaceAll(part, " ", "_"), reloadResult(err)).Inc()
}

func (m *AuthMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.decisions.Describe(ch)
	m.reloads.Describe(ch)
	for _, c := range m.others {
		c.Describe(ch)
	}
}

func (m *AuthMetrics) Collect(ch chan<- prometheus.Metric) {
	m.decisions.Collect(ch)
	m.reloads.Collect(ch)
	for _, c := range m.others {
		c.Collect(ch)
	}
}

// AddAgents reports the Web Bot Auth agents of v at every scrape: the keys
// in force and the directory fetches by outcome, per agent.
func (m *Metrics) AddAgents(v *webbotauth.Verifier) {
	m.reg.MustRegister(&agentCollector{v: v,
		keys: prometheus.NewDesc("reqmtls_web_bot_auth_agent_keys", "Keys in force for each Web Bot Auth agent the site trusts.", []string{"agent"}, nil),
		fetches: prometheus.NewDesc("reqmtls_web_bot_auth_directory_fetches_total",
			"Fetches of each agent's key directory, by result (ok, error); an error keeps the last good keys.", []string{"agent", "result"}, nil)})
}

// AddAccessLog reports, at every scrape, the access log's lines dropped
// so far, by reason: a write that failed (write_error), or lines that came
// faster than the file took them (behind).
func (m *Metrics) AddAccessLog(dropped func() (failed, behind uint64)) {
	m.reg.MustRegister(&accessLogCollector{dropped: dropped,
		desc: prometheus.NewDesc("reqmtls_access_log_lines_dropped_total",
			"Access log lines dropped, by reason: write_error (a write to the file failed) or behind (the file took lines slower than they came).",
			[]string{"reason"}, nil)})
}

type accessLogCollector struct {
	dropped func() (failed, behind uint64)
	desc    *prometheus.Desc
}

func (c *accessLogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *accessLogCollector) Collect(ch chan<- prometheus.Metric) {
	failed, behind := c.dropped()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(failed), "write_error")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(behind), "behind")
}

type agentCollector struct {
	v             *webbotauth.Verifier
	keys, fetches *prometheus.Desc
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.keys; ch <- c.fetches }

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	for _, a := range c.v.Agents() {
		ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(a.Keys), a.URL)
		if a.Fetched {
			ch <- prometheus.MustNewConstMetric(c.fetches, prometheus.CounterValue, float64(a.FetchesOK), a.URL, "ok")
			ch <- prometheus.MustNewConstMetric(c.fetches, prometheus.CounterValue, float64(a.Failures), a.URL, "error")
		}
	}
}

// RedisMetrics are the metrics of the fleet's Redis (package fleetstate's
// Observer): reqmtls_redis_up, and each call's errors and latency by op
// (nonce, limit, ping).
type RedisMetrics struct {
	up       prometheus.Gauge
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	ops      map[string]redisOp // the series of each op, looked up once
}

type redisOp struct {
	duration prometheus.Observer
	errors   prometheus.Counter
}

// AddRedis registers the Redis metrics, for a server that shares its
// state in Redis; sent reads how many sends to Redis the requests' calls
// made and how many calls those carried (reqmtls_redis_sends_total,
// reqmtls_redis_sent_calls_total).
func (m *Metrics) AddRedis(sent func() (sends, calls int64)) *RedisMetrics {
	r := &RedisMetrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "reqmtls_redis_up",
			Help: "1 while the fleet's Redis answers and holds nonces and limits, 0 while this instance keeps its own."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reqmtls_redis_errors_total",
			Help: "Redis calls that failed or passed their timeout, by op (nonce, limit, ping); each answered locally."}, []string{"op"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "reqmtls_redis_request_duration_seconds",
			Help:    "Time of each Redis call, by op (nonce: a signature's nonce, with the request's limit tokens in the same script; limit; ping), failed ones included.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25}}, []string{"op"}),
	}
	r.ops = map[string]redisOp{}
	for _, op := range []string{"nonce", "limit", "ping"} {
		r.ops[op] = redisOp{duration: r.duration.WithLabelValues(op), errors: r.errors.WithLabelValues(op)}
	}
	sends := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "reqmtls_redis_sends_total",
		Help: "Sends of the requests' nonce and limit calls to Redis, attempted: one for a call made at once, one for a batch of calls made together (a script loaded again, or a Cluster batch split by node, not counted apart)."},
		func() float64 { s, _ := sent(); return float64(s) })
	calls := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "reqmtls_redis_sent_calls_total",
		Help: "The nonce and limit calls those sends carried; sent calls per send is the batching."},
		func() float64 { _, c := sent(); return float64(c) })
	m.reg.MustRegister(r.up, r.errors, r.duration, sends, calls)
	return r
}

// Up sets reqmtls_redis_up.
func (r *RedisMetrics) Up(up bool) {
	if up {
		r.up.Set(1)
	} else {
		r.up.Set(0)
	}
}

// Call counts one Redis call.
func (r *RedisMetrics) Call(op string, took time.Duration, err error) {
	o, ok := r.ops[op]
	if !ok {
		o = redisOp{duration: r.duration.WithLabelValues(op), errors: r.errors.WithLabelValues(op)}
	}
	o.duration.Observe(took.Seconds())
	if err != nil {
		o.errors.Inc()
	}
}
