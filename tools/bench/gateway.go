package main

// The gateway comparison: this server with -upstream, nginx and Caddy as TLS
// terminators in front of the same origin, with the same certificates and
// the same load: a new flagged connection per request (a mutual TLS 1.3
// handshake with each of them: nginx and Caddy ask every client for a
// certificate, this server the flagged ones) and requests on one kept-alive
// HTTP/2 connection. The terminator's CPU per request is read from its
// processes' CPU time (nginx: master and worker).

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// originBody is what the origin answers every GET with.
const originBody = "hello from the origin\n"

// originSawCert is the response field in which the origin says whether the
// request came with a Client-Cert field: the bench checks that every
// terminator forwards the certificate.
const originSawCert = "Origin-Saw-Client-Cert"

// originSawSignature is the response field in which the origin repeats
// the Web-Bot-Auth-Status the gateway sent it, if any.
const originSawSignature = "Origin-Saw-Signature"

func originHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		saw := "?0"
		if r.Header.Get("Client-Cert") != "" {
			saw = "?1"
		}
		w.Header().Set(originSawCert, saw)
		if st := r.Header.Get("Web-Bot-Auth-Status"); st != "" {
			w.Header().Set(originSawSignature, st)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(originBody)))
		io.WriteString(w, originBody)
	})
}

// serveOrigin runs the origin: plain HTTP/1.1 on a loopback address.
func serveOrigin(args []string) {
	fs := flag.NewFlagSet("serve-origin", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	check(err)
	fmt.Fprintf(os.Stderr, "listening on %s\n", ln.Addr())
	hs := &http.Server{Handler: originHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	err = hs.Serve(ln)
	if !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

// startOriginInProcess runs the origin on a goroutine (for the tests, whose
// executable cannot serve it).
func startOriginInProcess() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	hs := &http.Server{Handler: originHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go hs.Serve(ln)
	return ln.Addr().String(), func() { hs.Close() }, nil
}

// A terminator is one TLS terminator in front of the origin.
type terminator struct {
	name string // ours, Caddy, nginx
	conf string // what it is configured to do with client certificates
	p    *proc
	url  *url.URL
	// cl, when set, is the client of its flagged loads (a certificate of
	// its own), instead of the comparison's.
	cl *client.Client
	// signed: its requests are signed, and the gateway must say the
	// signature verified.
	signed bool
}

// client is the client of t's flagged loads: its own, or cl.
func (t *terminator) client(cl *client.Client) *client.Client {
	if t.cl != nil {
		return t.cl
	}
	return cl
}

// gatewayEnv is what the terminators share.
type gatewayEnv struct {
	dir       string // scratch directory for configurations and logs
	pki       *benchPKI
	origin    string // host:port
	serverBin string // this project's server
	nginx     string // "" when not installed
	caddy     string
	pprofAddr string // ours serves pprof here when set
	pprofLog  bool   // and, when profiled, writes its access log
	accessLog bool   // also run ours with its access log on, to price it
	rules     bool   // also run ours with benchRules rules, to price them
	baseline  string // also run this server binary (an earlier build), to price a change
	// variants are this server again with more on (the load comparison's).
	variants []loadVariant
	// redisAddr is the redis-server the redis variant counts in; agent
	// the agent identity of the agent variant.
	redisAddr string
	agent     struct{ cert, key, list string }
	// verifyingOnly runs only the peers' configurations that verify the
	// client certificate, as ours does.
	verifyingOnly bool
}

// findPeer returns the path of a peer terminator, or "" with a message
// saying it is skipped.
func findPeer(name, flagValue string) string {
	if flagValue != "" {
		if _, err := os.Stat(flagValue); err != nil {
			log.Printf("%s: %v: skipping %s", name, err, name)
			return ""
		}
		return flagValue
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	log.Printf("%s is not installed (not in PATH): skipping %s in the gateway comparison (on Debian: apt-get install %s)", name, name, name)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// startTerminators starts ours, then nginx and Caddy in the configurations
// listed, each when installed.
func startTerminators(env *gatewayEnv) ([]*terminator, error) {
	var ts []*terminator
	common := []string{"-cert", env.pki.serverCert, "-key", env.pki.serverKey, "-client-cacert", env.pki.rootCA,
		"-upstream", "http://" + env.origin, "-listen-addr", "127.0.0.1:0"}
	args := slices.Clone(common)
	if env.pprofAddr != "" {
		args = append(args, "-pprof-addr", env.pprofAddr)
		if env.pprofLog {
			args = append(args, "-access-log", filepath.Join(env.dir, "access-profiled.log"))
		}
	}
	p, err := startListening(true, env.serverBin, args...)
	if err != nil {
		return nil, err
	}
	ts = append(ts, &terminator{name: "ours", conf: "-client-auth request: flagged clients asked, certificate verified", p: p, url: siteURL(p.addr)})
	if env.baseline != "" {
		p, err := startListening(true, env.baseline, common...)
		if err != nil {
			return ts, err
		}
		ts = append(ts, &terminator{name: oursBaseline, conf: "the same, built from " + env.baseline, p: p, url: siteURL(p.addr)})
	}
	if env.accessLog {
		// The same with a line per request to a file (the pprof
		// address, if any, is the first one's).
		logArgs := append(common, "-access-log", filepath.Join(env.dir, "access.log"))
		p, err := startListening(true, env.serverBin, logArgs...)
		if err != nil {
			return ts, err
		}
		ts = append(ts, &terminator{name: oursLogged, conf: "the same with -access-log FILE: a line per request", p: p, url: siteURL(p.addr)})
	}
	if env.rules {
		// The same by a configuration file, with rules that every
		// request reads to the end: each one's path, method and
		// certificate hold, its name does not.
		conf := filepath.Join(env.dir, "rules.yaml")
		if err := os.WriteFile(conf, []byte(rulesConfig(env)), 0o600); err != nil {
			return ts, err
		}
		p, err := startListening(true, env.serverBin, "-config", conf)
		if err != nil {
			return ts, err
		}
		ts = append(ts, &terminator{name: oursRules, conf: fmt.Sprintf("the same with %d rules, none matching, each read to its last predicate (path, method, cert: valid hold; san does not)", benchRules), p: p, url: siteURL(p.addr)})
	}
	for _, v := range env.variants {
		args, err := v.args(env, slices.Clone(common))
		if err != nil {
			return ts, fmt.Errorf("%s: %w", v.label, err)
		}
		p, err := startListening(true, env.serverBin, args...)
		if err != nil {
			return ts, fmt.Errorf("%s: %w", v.label, err)
		}
		t := &terminator{name: v.label, conf: v.conf, p: p, url: siteURL(p.addr)}
		if v.client != nil {
			if t.cl, err = v.client(env); err != nil {
				return ts, fmt.Errorf("%s: %w", v.label, err)
			}
		}
		ts = append(ts, t)
	}
	verifies := []bool{true, false}
	if env.verifyingOnly {
		verifies = verifies[:1]
	}
	if env.caddy != "" {
		for _, verify := range verifies {
			t, err := startCaddy(env, verify)
			if err != nil {
				return ts, err
			}
			ts = append(ts, t)
		}
	}
	if env.nginx != "" {
		for _, verify := range verifies {
			t, err := startNginx(env, verify)
			if err != nil {
				return ts, err
			}
			ts = append(ts, t)
		}
	}
	return ts, nil
}

// oursLogged names this server with its access log on, oursRules with
// benchRules rules, oursBaseline an earlier build of it.
const (
	oursLogged   = "ours, access log"
	oursRules    = "ours, 50 rules"
	oursAgent    = "ours, agent-vouched"
	oursRedis    = "ours, Redis limit"
	oursBaseline = "ours, baseline"
)

// benchRules is how many rules oursRules reads per request.
const benchRules = 50

// rulesConfig is ours as startTerminators runs it, by a configuration
// file, with benchRules rules none of which matches the load's requests:
// each one's path, method and certificate hold, its name does not.
func rulesConfig(env *gatewayEnv) string {
	return rulesConfigMatching(env, "path: /, method: GET, cert: valid, san: bot-%d.example")
}

// rulesConfigMatching is rulesConfig with each rule's match (its %d the
// rule's number).
func rulesConfigMatching(env *gatewayEnv, match string) string {
	var b strings.Builder
	b.WriteString(baseConfig(env) + "rules:\n")
	for i := range benchRules {
		fmt.Fprintf(&b, "  - name: rule-%d\n    match: {"+match+"}\n    action: deny\n", i, i)
	}
	return b.String()
}

// baseConfig is the plain server's settings as a configuration file.
func baseConfig(env *gatewayEnv) string {
	return fmt.Sprintf("cert: %s\nkey: %s\nclient_cacert: %s\nupstream: http://%s\nlisten_addr: 127.0.0.1:0\n",
		env.pki.serverCert, env.pki.serverKey, env.pki.rootCA, env.origin)
}

// siteURL is the URL the load asks for: by the name localhost, so that the
// client sends it as SNI, as a browser would (Caddy, when it asks for
// client certificates, answers 421 to a request whose Host differs from the
// SNI, and there is no SNI for an IP address).
func siteURL(addr string) *url.URL {
	_, port, _ := net.SplitHostPort(addr)
	return &url.URL{Scheme: "https", Host: net.JoinHostPort("localhost", port), Path: "/"}
}

// freeAddr returns a loopback address that was free a moment ago, for the
// peers that cannot report the port they chose.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

const nginxConf = `{{if .Root}}user root;
{{end}}worker_processes 1;
# Room for the memory comparison's ten thousand connections.
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events { worker_connections 16384; }
http {
	access_log off;
	# Go's servers close no connection after a number of requests;
	# nginx's default is 1000.
	keepalive_requests 1000000;
	client_body_temp_path {{.Dir}}/body;
	proxy_temp_path {{.Dir}}/proxy;
	fastcgi_temp_path {{.Dir}}/fastcgi;
	uwsgi_temp_path {{.Dir}}/uwsgi;
	scgi_temp_path {{.Dir}}/scgi;
	upstream origin {
		server {{.Origin}};
		# Room for h2load's hundred requests at a time (the load
		# comparison): with fewer idle connections kept, nginx opens
		# and closes connections to the origin under it.
		keepalive 256;
		keepalive_requests 1000000;
	}
	server {
		listen {{.Addr}} ssl http2;
		ssl_certificate {{.Cert}};
		ssl_certificate_key {{.Key}};
		ssl_protocols TLSv1.3;
{{if .Verify}}		ssl_client_certificate {{.CA}};
		ssl_verify_client optional;
{{else}}		ssl_verify_client optional_no_ca;
{{end}}		location / {
			proxy_pass http://origin;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $host;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto https;
			proxy_set_header Client-Cert $ssl_client_escaped_cert;
			proxy_set_header Client-Cert-Verify $ssl_client_verify;
		}
	}
}
`

const caddyfile = `{
	admin off
	auto_https off
	servers {
		protocols h1 h2
	}
}
https://:{{.Port}} {
	bind 127.0.0.1
	tls {{.Cert}} {{.Key}} {
		protocols tls1.3
		client_auth {
{{if .Verify}}			mode verify_if_given
{{else}}			mode request
{{end}}			trusted_ca_cert_file {{.CA}}
		}
	}
	reverse_proxy {{.Origin}} {
		header_up Client-Cert ":{http.request.tls.client.certificate_der_base64}:"
	}
}
`

type peerConf struct {
	Root                    bool
	Dir, Addr, Port, Origin string
	Cert, Key, CA           string
	Verify                  bool
}

func writeConf(tmpl, file string, c peerConf) error {
	var b strings.Builder
	if err := template.Must(template.New("").Parse(tmpl)).Execute(&b, c); err != nil {
		return err
	}
	return os.WriteFile(file, []byte(b.String()), 0o600)
}

func startNginx(env *gatewayEnv, verify bool) (*terminator, error) {
	name, conf := "nginx", "ssl_verify_client optional + ssl_client_certificate: every client asked, certificate verified"
	if !verify {
		name, conf = "nginx, no_ca", "ssl_verify_client optional_no_ca: every client asked, not verified"
	}
	dir, err := os.MkdirTemp(env.dir, "nginx")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	c := peerConf{Root: os.Geteuid() == 0, Dir: dir, Addr: addr, Origin: env.origin,
		Cert: env.pki.serverCert, Key: env.pki.serverKey, CA: env.pki.rootCA, Verify: verify}
	file := filepath.Join(dir, "nginx.conf")
	if err := writeConf(nginxConf, file, c); err != nil {
		return nil, err
	}
	// -e: the error log from the start, before the configuration is read
	// (otherwise nginx opens the system's). SIGTERM: a fast shutdown, the
	// master stopping its worker (which SIGKILL to the master would leave
	// running).
	p, err := startAt(addr, filepath.Join(dir, "error.log"), nil, syscall.SIGTERM,
		env.nginx, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", file)
	if err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	return &terminator{name: name, conf: conf, p: p, url: siteURL(addr)}, nil
}

func startCaddy(env *gatewayEnv, verify bool) (*terminator, error) {
	name, conf := "Caddy", "client_auth mode verify_if_given: every client asked, certificate verified"
	if !verify {
		name, conf = "Caddy, request", "client_auth mode request: every client asked, not verified"
	}
	dir, err := os.MkdirTemp(env.dir, "caddy")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	c := peerConf{Dir: dir, Addr: addr, Port: port, Origin: env.origin,
		Cert: env.pki.serverCert, Key: env.pki.serverKey, CA: env.pki.rootCA, Verify: verify}
	file := filepath.Join(dir, "Caddyfile")
	if err := writeConf(caddyfile, file, c); err != nil {
		return nil, err
	}
	// Caddy keeps its state under HOME and the XDG directories: all in
	// the scratch directory.
	envv := append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	p, err := startAt(addr, filepath.Join(dir, "stderr"), envv, syscall.SIGTERM,
		env.caddy, "run", "--config", file, "--adapter", "caddyfile")
	if err != nil {
		return nil, fmt.Errorf("caddy: %w", err)
	}
	return &terminator{name: name, conf: conf, p: p, url: siteURL(addr)}, nil
}

// startAt starts a process that listens on addr (given in its
// configuration), pinned like the others, with its output in logFile, and
// waits until addr accepts connections. stop sends it graceful first.
func startAt(addr, logFile string, env []string, graceful syscall.Signal, name string, args ...string) (*proc, error) {
	name, args = onServerCPU(name, args...)
	out, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr, cmd.Env = out, out, env
	setDeathSignal(cmd, graceful)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, addr: addr, graceful: graceful, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	addStarted(p)
	diag := func() string { b, _ := os.ReadFile(logFile); return strings.TrimSpace(string(b)) }
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.exited:
			return nil, fmt.Errorf("exited at start (%v):\n%s", cmd.ProcessState, diag())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return p, nil
		}
	}
	return nil, fmt.Errorf("not listening on %s after 20 s:\n%s", addr, diag())
}

// treeCPU is the CPU time of the process and its children (nginx's
// workers), from schedstat.
func (p *proc) treeCPU() time.Duration { return treeSum(p, cpuOfPID) }

// treeFaults is the minor page faults of the process and its children.
func (p *proc) treeFaults() uint64 { return treeSum(p, faultsOfPID) }

// treeSum adds up of over the process and its children.
func treeSum[T ~int64 | ~uint64](p *proc, of func(pid int) T) T {
	total := of(p.cmd.Process.Pid)
	for _, k := range childProcs(p.cmd.Process.Pid) {
		total += of(k.pid)
	}
	return total
}

// faultsOfPID is a process's minor page faults (its stat's tenth field).
func faultsOfPID(pid int) uint64 {
	f := procStat(pid)
	if len(f) < 8 {
		return 0
	}
	n, _ := strconv.ParseUint(f[7], 10, 64)
	return n
}

// A warmup is what it took to bring a new server to its running state.
type warmup struct {
	calls int
	cpu   time.Duration
}

// Warming a new server: batches of warmBatch calls, until one takes fewer
// than one minor page fault per call.
const warmBatch = 50

// warmUntilSettled loads a server started for a round (one call of one at
// a time, at most limit calls) until its memory has stopped growing. A new
// Go server faults its heap in over its first few hundred handshakes, up
// to its collector's goal, and a page fault costs about 20 µs on this
// virtual machine: under GOGC=400 the stock server's first 300 handshakes
// cost about 40 % more than the later ones. That is paid once per process,
// and is no part of what a running server pays per request.
func warmUntilSettled(p *proc, limit int, one func() error) (warmup, error) {
	var w warmup
	cpu0 := p.treeCPU()
	for w.calls < limit {
		f0 := p.treeFaults()
		for range warmBatch {
			if err := one(); err != nil {
				return w, err
			}
		}
		w.calls += warmBatch
		if p.treeFaults()-f0 < warmBatch {
			break
		}
	}
	w.cpu = p.treeCPU() - cpu0
	return w, nil
}

// childProc is a process, with its start time to tell it from a later
// process given the same pid.
type childProc struct {
	pid   int
	start string
}

// procStat returns the fields of /proc/PID/stat after the command name
// (which may hold spaces and parentheses): state, ppid, ...
func procStat(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// childProcs lists the processes whose parent is pid.
func childProcs(pid int) []childProc {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var kids []childProc
	for _, d := range dirs {
		k, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		// Fields from state: ppid is the second, starttime the 20th.
		if f := procStat(k); len(f) > 19 {
			if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
				kids = append(kids, childProc{pid: k, start: f[19]})
			}
		}
	}
	return kids
}

// kill sends SIGKILL to the process if it is still the one listed.
func (c childProc) kill() {
	if f := procStat(c.pid); len(f) > 19 && f[19] == c.start {
		if p, err := os.FindProcess(c.pid); err == nil {
			p.Kill()
		}
	}
}

// gatewayMode is one of the two loads.
type gatewayMode struct {
	label   string
	newConn bool
}

var gatewayModes = []gatewayMode{
	{"a new flagged connection per request", true},
	{"one kept-alive HTTP/2 connection", false},
}

// gatewayResult is one measurement: the terminator's CPU per request and
// the latencies the client saw.
type gatewayResult struct {
	cpuUS    float64
	p50, p99 time.Duration
}

// newGatewayClient returns the load's client: flag 80 with the client
// certificate, X25519 key shares only (neither nginx 1.22 on OpenSSL 3.0
// nor Caddy 2.6 offers X25519MLKEM768, which Go would pick).
func newGatewayClient(p *benchPKI) (*client.Client, error) {
	return client.New(gatewayClientConfig(p))
}

func gatewayClientConfig(p *benchPKI) client.Config {
	return client.Config{Flags: tlsflags.Must(tlsflags.RequestMTLS), RootCAs: p.pool,
		CertFile: p.clientCert, KeyFile: p.clientKey, Groups: []utls.CurveID{utls.X25519, utls.CurveP256}}
}

// gatewayGet sends one GET on cn and checks the answer came from the
// origin with the client certificate forwarded.
func gatewayGet(ctx context.Context, cl *client.Client, cn *client.Conn, u *url.URL) error {
	return gatewayGetSigned(ctx, cl, cn, u, false)
}

// gatewayGetSigned is gatewayGet that, when signed, also checks that the
// gateway told the origin the request's signature verified.
func gatewayGetSigned(ctx context.Context, cl *client.Client, cn *client.Conn, u *url.URL, signed bool) error {
	req, err := http.NewRequestWithContext(ctx, "GET", u.String(), nil)
	if err != nil {
		return err
	}
	resp, body, err := cl.Do(ctx, cn, req, 1<<16)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != originBody {
		return fmt.Errorf("GET %s: %s %q", u, resp.Status, body)
	}
	if got := resp.Header.Get(originSawCert); got != "?1" {
		return fmt.Errorf("GET %s: the origin received no Client-Cert field (%s: %q)", u, originSawCert, got)
	}
	if got := resp.Header.Get(originSawSignature); signed && got != "valid" {
		return fmt.Errorf("GET %s: the origin saw Web-Bot-Auth-Status %q, want valid", u, got)
	}
	return nil
}

// checkHandshake checks a connection is the one the comparison is about: a
// full TLS 1.3 handshake, HTTP/2, the certificate requested and sent.
func checkHandshake(hs client.Handshake) error {
	if hs.Version != tls.VersionName(tls.VersionTLS13) || hs.Resumed || hs.ALPN != "h2" || !hs.CertRequested || !hs.CertSent {
		return fmt.Errorf("not a full TLS 1.3 HTTP/2 handshake with a client certificate: %+v", hs)
	}
	return nil
}

// gatewayLoad sends n requests to t with conc workers: each on a new
// connection, or all on one kept-alive HTTP/2 connection. It returns the
// terminator's CPU time per request and the client's latencies (for a new
// connection, from dialing to the end of the response).
func gatewayLoad(t *terminator, cl *client.Client, newConn bool, n, conc int) (gatewayResult, error) {
	var s gatewaySample
	if err := s.load(t, cl, newConn, n, conc); err != nil {
		return gatewayResult{}, err
	}
	return s.result(), nil
}

// A gatewaySample adds up the loads a terminator took in a round.
type gatewaySample struct {
	cpu  time.Duration
	wall time.Duration // the measured loads' time
	n    int
	lat  []time.Duration
}

func (s *gatewaySample) result() gatewayResult {
	slices.Sort(s.lat)
	return gatewayResult{cpuUS: float64(s.cpu) / float64(s.n) / 1e3, p50: s.lat[len(s.lat)/2], p99: s.lat[len(s.lat)*99/100]}
}

// load sends n requests to t with conc workers, as gatewayLoad, and adds
// them to s.
func (s *gatewaySample) load(t *terminator, cl *client.Client, newConn bool, n, conc int) error {
	ctx := context.Background()
	var shared *client.Conn
	if !newConn {
		var err error
		if shared, err = cl.Dial(ctx, t.url); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		defer shared.Close()
		if err := checkHandshake(shared.Handshake); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	one := func() (time.Duration, error) {
		t0 := time.Now()
		cn := shared
		if cn == nil {
			var err error
			if cn, err = cl.Dial(ctx, t.url); err != nil {
				return 0, err
			}
			defer cn.Close()
			if err := checkHandshake(cn.Handshake); err != nil {
				return 0, err
			}
		}
		if err := gatewayGetSigned(ctx, cl, cn, t.url, t.signed); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	// Warm up this connection's load (the process was warmed when it
	// started: runGateway).
	for range max(5, n/50) {
		if _, err := one(); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	time.Sleep(20 * time.Millisecond)
	before := t.p.treeCPU()
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	t0 := time.Now()
	err := parallel(n, conc, func(int) error {
		d, err := one()
		if err != nil {
			return err
		}
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	s.wall += time.Since(t0)
	time.Sleep(50 * time.Millisecond) // let the terminator finish closing
	s.cpu += t.p.treeCPU() - before
	s.n += n
	s.lat = append(s.lat, lat...)
	return nil
}

// gatewayParams sizes the comparison.
type gatewayParams struct {
	rounds        int
	newConnN      int // requests per round on new connections
	keepAliveN    int // requests per round on the kept-alive connection
	newConnConc   int
	keepAliveConc int
	warmMax       int // at most so many requests warm a new terminator (warmUntilSettled)
}

// gatewayResults holds every round's measurement, by terminator and mode.
type gatewayResults struct {
	ts  []*terminator
	res [][][]gatewayResult // [terminator][mode][round]
}

// runGateway interleaves the terminators over the rounds, in an order
// rotated each round. Each round starts them anew (start) and stops them
// at its end: a process's speed depends on where its memory happens to
// land, by a few percent between two runs of the same binary, and a new
// process per round turns that into noise the medians absorb instead of a
// bias that lasts the whole comparison.
func runGateway(start func() ([]*terminator, error), p *benchPKI, gp gatewayParams, progress func(string)) (*gatewayResults, error) {
	cl, err := newGatewayClient(p)
	if err != nil {
		return nil, err
	}
	r := &gatewayResults{}
	for round := range gp.rounds {
		ts, err := start()
		if err != nil {
			stopTerminators(ts)
			return nil, err
		}
		if r.ts == nil {
			r.ts, r.res = ts, make([][][]gatewayResult, len(ts))
			for i := range ts {
				r.res[i] = make([][]gatewayResult, len(gatewayModes))
			}
		} else if len(ts) != len(r.ts) {
			stopTerminators(ts)
			return nil, fmt.Errorf("round %d started %d terminators, the first %d", round+1, len(ts), len(r.ts))
		}
		for _, t := range ts {
			w, err := warmUntilSettled(t.p, gp.warmMax, func() error {
				cn, err := cl.Dial(context.Background(), t.url)
				if err != nil {
					return err
				}
				defer cn.Close()
				return gatewayGet(context.Background(), cl, cn, t.url)
			})
			if err != nil {
				stopTerminators(ts)
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			if progress != nil {
				progress(fmt.Sprintf("round %d, %s: warmed by %d requests on new connections, %.0f ms of CPU", round+1, t.name, w.calls, w.cpu.Seconds()*1e3))
			}
		}
		for m, mode := range gatewayModes {
			n, conc := gp.keepAliveN, gp.keepAliveConc
			if mode.newConn {
				n, conc = gp.newConnN, gp.newConnConc
			}
			// The round's load in slices, the terminators taking turns
			// at each: the machine's speed drifts within seconds, and
			// each terminator gets its share of every state.
			samples := make([]gatewaySample, len(ts))
			for sl := range gatewaySlices {
				for k := range ts {
					i := (k + round + sl) % len(ts)
					if err := samples[i].load(ts[i], cl, mode.newConn, max(n/gatewaySlices, 1), conc); err != nil {
						stopTerminators(ts)
						return nil, err
					}
				}
			}
			for i := range ts {
				res := samples[i].result()
				r.res[i][m] = append(r.res[i][m], res)
				if progress != nil {
					progress(fmt.Sprintf("round %d, %s, %s: %.1f µs of CPU per request", round+1, ts[i].name, mode.label, res.cpuUS))
				}
			}
		}
		stopTerminators(ts)
		if progress != nil {
			progress(fmt.Sprintf("gateway round %d/%d done", round+1, gp.rounds))
		}
	}
	return r, nil
}

// gatewaySlices is how many turns the terminators take at a round's load.
const gatewaySlices = 10

// stopTerminators stops the processes of a round's terminators.
func stopTerminators(ts []*terminator) {
	for _, t := range ts {
		t.p.stop()
	}
}

func (r *gatewayResults) cpu(i, m int) float64 {
	var v []float64
	for _, x := range r.res[i][m] {
		v = append(v, x.cpuUS)
	}
	return median(v)
}

func (r *gatewayResults) latency(i, m int) (p50, p99 time.Duration) {
	var a, b []float64
	for _, x := range r.res[i][m] {
		a, b = append(a, float64(x.p50)), append(b, float64(x.p99))
	}
	return time.Duration(median(a)), time.Duration(median(b))
}

// ratio is the median over rounds of ours (terminator 0) over terminator i,
// taken within each round.
func (r *gatewayResults) ratio(i, m int) float64 {
	var v []float64
	for k := range r.res[i][m] {
		v = append(v, r.res[0][m][k].cpuUS/r.res[i][m][k].cpuUS)
	}
	return median(v)
}

// markdown is the comparison's table, with what each terminator does and
// which were skipped.
func (r *gatewayResults) markdown(gp gatewayParams, skipped []string) string {
	var md strings.Builder
	pinned := ""
	if serverCPU != "" {
		pinned = fmt.Sprintf("; terminators pinned to CPU %s, origin and load on the other", serverCPU)
	}
	fmt.Fprintf(&md, "TLS terminators in front of the same origin (HTTP/1.1 on loopback, a %d-byte answer to GET): terminator CPU per request (µs, its processes' CPU time) and latency at the client; median of %d interleaved rounds (the terminators started anew each round and warmed on new connections until %d requests took fewer than one page fault each, taking %d turns at each load) of %d requests on new connections (%d at a time) and %d on kept-alive HTTP/2 connections (%d per connection, %d at a time); ECDSA P-256 certificate, TLS 1.3, X25519, client sends flag 80 and a certificate; %d cores%s:\n\n",
		len(originBody), gp.rounds, warmBatch, gatewaySlices, gp.newConnN, gp.newConnConc, gp.keepAliveN, max(gp.keepAliveN/gatewaySlices, 1), gp.keepAliveConc, numCPU(), pinned)
	fmt.Fprintf(&md, "| terminator | new connection per request: CPU | p50 | p99 | ours ÷ this | kept-alive HTTP/2: CPU | p50 | p99 | ours ÷ this |\n|---|---|---|---|---|---|---|---|---|\n")
	for i, t := range r.ts {
		fmt.Fprintf(&md, "| %s", t.name)
		for m := range gatewayModes {
			p50, p99 := r.latency(i, m)
			rat := "—"
			if i > 0 {
				rat = fmt.Sprintf("%.2f", r.ratio(i, m))
			}
			fmt.Fprintf(&md, " | %.0f µs | %s | %s | %s", r.cpu(i, m), ms(p50), ms(p99), rat)
		}
		md.WriteString(" |\n")
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

// bars is the comparison's chart data: CPU per request by mode.
func (r *gatewayResults) bars() []bar {
	var bars []bar
	for m, mode := range gatewayModes {
		for i, t := range r.ts {
			bars = append(bars, bar{group: mode.label, label: t.name, value: r.cpu(i, m)})
		}
	}
	return bars
}

// goals returns the comparison against its targets, as ratios of CPU per
// request (median of per-round ratios): on new connections at most 0.85
// times Caddy's and 0.8 times nginx's; kept alive at most 0.75 times
// Caddy's and 2.3 times nginx's (Go's own HTTP/2 server and reverse proxy
// are the floor there); the access log adding at most 3 %, and so do 50
// rules on the kept-alive path. Every
// configuration of each peer is held to them.
func (r *gatewayResults) goals() string {
	var b strings.Builder
	for i, t := range r.ts {
		if i == 0 {
			continue
		}
		for m, mode := range gatewayModes {
			if t.name == oursBaseline {
				fmt.Fprintf(&b, "- %s, ours ÷ baseline: %.3f\n", mode.label, r.ratio(i, m))
				continue
			}
			if t.name == oursLogged {
				got := 1 / r.ratio(i, m)
				fmt.Fprintf(&b, "- %s, access log on ÷ off: %.3f, goal at most 1.03: %s\n", mode.label, got, verdict(got, 1.03))
				continue
			}
			if t.name == oursRules {
				got := 1 / r.ratio(i, m)
				if mode.newConn {
					fmt.Fprintf(&b, "- %s, %d rules ÷ none: %.3f\n", mode.label, benchRules, got)
				} else {
					fmt.Fprintf(&b, "- %s, %d rules ÷ none: %.3f, goal at most 1.03: %s\n", mode.label, benchRules, got, verdict(got, 1.03))
				}
				continue
			}
			var limit float64
			switch peer := strings.HasPrefix(t.name, "Caddy"); {
			case mode.newConn && peer:
				limit = 0.85
			case mode.newConn:
				limit = 0.8
			case peer:
				limit = 0.75
			default:
				limit = 2.3
			}
			got := r.ratio(i, m)
			fmt.Fprintf(&b, "- %s, ours ÷ %s: %.2f, goal at most %.2g: %s\n", mode.label, t.name, got, limit, verdict(got, limit))
		}
	}
	return b.String()
}

// peerSkips says which peers of the comparison are not installed.
func peerSkips(env *gatewayEnv) []string {
	var skipped []string
	if env.caddy == "" {
		skipped = append(skipped, "Caddy: not installed, skipped")
	}
	if env.nginx == "" {
		skipped = append(skipped, "nginx: not installed, skipped")
	}
	return skipped
}

// starter starts the terminators of a part each round, and logs what
// each is the first time.
func starter(env *gatewayEnv, part string) func() ([]*terminator, error) {
	first := true
	return func() ([]*terminator, error) {
		ts, err := startTerminators(env)
		if err == nil && first {
			first = false
			for _, t := range ts {
				log.Printf("%s: %s (%s)", part, t.name, t.conf)
			}
		}
		return ts, err
	}
}

func verdict(got, limit float64) string {
	if got > limit {
		return "missed"
	}
	return "met"
}

// startOrigin starts the bench's origin (serve-origin) and returns its
// address. The origin is not measured: it runs beside the load, unpinned
// from the terminators' CPU (the bench itself runs on the load's).
func startOrigin() string {
	self, err := os.Executable()
	check(err)
	origin, err := startListening(false, self, "serve-origin", "-addr", "127.0.0.1:0")
	check(err)
	return origin.addr
}

// gatewayBench runs the comparison: the origin on the load's CPU, the
// terminators on the server CPU. It returns the Markdown and the chart's
// bars.
func gatewayBench(dir, binDir string, gp gatewayParams, nginxFlag, caddyFlag, baseline string, prof profileParams) (string, []bar) {
	defer stopAll()
	env := &gatewayEnv{dir: dir, pki: makePKI(dir, "gateway", false), origin: startOrigin(),
		serverBin: filepath.Join(binDir, "server"), nginx: findPeer("nginx", nginxFlag), caddy: findPeer("caddy", caddyFlag),
		accessLog: true, rules: true, baseline: baseline}
	skipped, start := peerSkips(env), starter(env, "gateway")
	res, err := runGateway(start, env.pki, gp, func(s string) { log.Print(s) })
	check(err)
	md := res.markdown(gp, skipped)
	if g := res.goals(); g != "" {
		md += "\nGoals (ratios of CPU per request, median per round):\n\n" + g
	}
	fmt.Print("\n" + md)
	if prof.file != "" {
		check(profileOurs(env, gp, prof))
	}
	return md, res.bars()
}

// profileParams says what -profile samples.
type profileParams struct {
	file      string
	d         time.Duration
	keepAlive bool // the kept-alive load instead of new connections
	accessLog bool // with the access log on
}

// startProfiled starts this server alone as the gateway once more, with
// pprof on a free address (and, with accessLog, its access log): none of
// the peers, variants or earlier builds of env. It returns the server
// and its pprof address.
func startProfiled(env *gatewayEnv, accessLog bool) (*terminator, string, error) {
	pa, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	e := *env
	e.pprofAddr, e.pprofLog = pa, accessLog
	e.caddy, e.nginx, e.accessLog, e.rules, e.variants, e.baseline = "", "", false, false, nil, ""
	ts, err := startTerminators(&e)
	if err != nil {
		stopTerminators(ts)
		return nil, "", err
	}
	return ts[0], pa, nil
}

// profileOurs runs this server as the gateway once more, with pprof on,
// and writes a CPU profile taken under one of the loads.
func profileOurs(env *gatewayEnv, gp gatewayParams, prof profileParams) error {
	t, pa, err := startProfiled(env, prof.accessLog)
	if err != nil {
		return err
	}
	defer t.p.stop()
	cl, err := newGatewayClient(env.pki)
	if err != nil {
		return err
	}
	n, conc, load := 100, gp.newConnConc, "new-connection"
	if prof.keepAlive {
		n, conc, load = 1000, gp.keepAliveConc, "kept-alive"
	}
	log.Printf("profiling ours under the %s load for %v (access log %v)", load, prof.d, prof.accessLog)
	return profileWhile(pa, prof.file, prof.d, env.serverBin, "requests", func() (int, error) {
		_, err := gatewayLoad(t, cl, !prof.keepAlive, n, conc)
		return n, err
	})
}
