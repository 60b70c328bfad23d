// Command server is the request-mTLS test server: HTTPS with HTTP/2 that asks
// for a client certificate only when the client sets the request-mTLS flag,
// and reports what it saw at /debug.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	_ "net/http/pprof"
	"net/netip" // for -pprof-addr only: the server's own mux is separate
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/logbuf"
	"github.com/req-mtls/req-mtls/server"
)

const usage = `usage: server -cert FILE -key FILE [-client-cacert FILE] [options]

Serves HTTPS (HTTP/2 and HTTP/1.1) on -listen-addr. A client that sets the
request-mTLS flag (TLS flag 80) is sent a CertificateRequest; no one else is,
unless -client-auth always. GET /debug reports what the server saw of the
connection (add ?format=json for everything); GET / explains it in a browser.

With -upstream it is a gateway: every request goes to the origin, with the
client's verified certificate (RFC 9440 Client-Cert) and the handshake's
decision in Req-Mtls-* fields; the server's own pages are off unless -pages.

Certificate files are reloaded when they change, and on SIGHUP; a bad file
keeps the last good state. SIGINT or SIGTERM shuts down gracefully.

Options:
  -cert FILE                server certificate chain (PEM)
  -key FILE                 server private key (PEM)
  -acme-domain NAME,...     instead of -cert and -key: get the certificate for
                            these names from an ACME server, cache and renew it
  -acme-directory URL       ACME directory (default Let's Encrypt's)
  -acme-email ADDR          ACME account contact (optional)
  -acme-cache DIR           where the account and certificates are kept
                            (default acme-cache; mode 0700)
  -acme-cacert FILE         roots for a private ACME server (default: system)
  -http-addr ADDR           also serve plain HTTP here (port 80): ACME http-01
                            challenges, and redirects to HTTPS
  -client-cacert FILE       roots for client certificates (PEM bundle)
  -bot-cacert FILE          roots for flagged clients only, kept apart from
                            -client-cacert (default: use -client-cacert)
  -client-crl FILE          certificate revocation lists (PEM or DER), each
                            signed by a CA of -client-cacert or -bot-cacert:
                            revoked certificates, and any of an issuer whose
                            CRL is past its nextUpdate, do not validate
  -deny FILE                deny list: cert-sha256:HEX, spki-sha256:HEX,
                            jwk:THUMBPRINT, agent:URL a line (gencert
                            -fingerprint prints them); refused on both layers,
                            reloaded on change and SIGHUP
  -ticket-keys FILE         session ticket keys shared by a fleet: one a line,
                            32 bytes in base64 (openssl rand -base64 32); the
                            first encrypts, all decrypt (default: per process)
  -listen-addr ADDR         address to listen on (default localhost:8775)
  -proxy-protocol-from LIST load balancers (CIDR or IP, comma separated) whose
                            connections start with a PROXY protocol v1/v2
                            header, required from them, refused from others
  -client-auth POLICY       request: ask flagged clients, report validity (default)
                            verify:  ask flagged clients, reject invalid certificates
                            require: flagged clients must present a valid certificate
                            always:  classic mTLS, every client must present one
  -handshake-timeout D      time from accepting a connection to the end of its
                            TLS handshake (default 10s)
  -max-handshakes N         handshakes in progress at once; more are refused
                            (default 1024)
  -max-hello-memory N       bytes held for ClientHellos being read, over all
                            connections; past it, internal_error (default 32MiB)
  -read-header-timeout D    HTTP request header time limit (default 10s)
  -idle-timeout D           keep-alive idle limit (default 2m)
  -shutdown-timeout D       grace period for requests at shutdown (default 10s)
  -drain-delay D            on SIGTERM, answer /readyz with 503 and keep serving
                            this long before stopping (default 0s)
  -upstream URL             proxy every request to this origin: http://HOST:PORT,
                            https://HOST:PORT or unix:/PATH (default: none)
  -upstream-cert FILE       client certificate for mTLS to an https origin
  -upstream-key FILE        its key
  -upstream-cacert FILE     roots for the origin's certificate (default: system)
  -upstream-timeout D       wait for the origin's response header (default 30s)
  -signature-agents FILE    verify Web Bot Auth signatures of the agents listed,
                            one a line: URL (its key directory fetched over
                            HTTPS) or URL JWKSFILE (its keys pinned); the origin
                            gets Web-Bot-Auth-Status and, when valid,
                            Web-Bot-Auth-Agent and -Keyid
  -signature-agents-cacert FILE  roots for the agents' directories (default:
                            the system roots)
  -signature-skew D         how far a signature's created may be ahead and its
                            expires behind (default 1m)
  -signature-max-validity D  how long a signature may be valid for, from its
                            created to its expires (default 1h): a signature
                            valid for longer is invalid
  -signature-keys-max-stale D  how long a directory's last good keys stay in
                            force past their cache lifetime while fetches
                            fail (default 1h; a 404 or 410 drops them at once)
  -signature-directory KEYFILE,...  serve these keys' directory at
                            /.well-known/http-message-signatures-directory,
                            signed, for a bot operator's site: Ed25519 signing
                            keys and the agent certificate's key (agent.key)
  -redis URL                a Redis the fleet shares: each verified signature's
                            nonce is stored there until it expires, so a replay
                            at any instance is refused; redis://[user:pass@]
                            host:port[/db], rediss:// (TLS), unix:///PATH, a
                            Cluster (redis://h1:p1?addr=h2:p2&addr=...) or
                            Sentinels (...&master_name=NAME) (default: none)
  -redis-cacert FILE        roots for a rediss:// server (default: system)
  -redis-timeout D          bound on each Redis call of a request; past it, or
                            while Redis is down, this instance's own state
                            answers (default 50ms)
  -upstream-max-conns N     connections open to the origin at most (default
                            1024; 0: no cap)
  -xfcc                     also send Envoy's x-forwarded-client-cert
  -max-request-body N       request body limit, bytes or 10MiB (default 10MiB;
                            0: none)
  -max-response-body N      origin response limit (default and 0: none)
  -pages PATH|off           where the index page and /debug are served (default
                            /, or off with -upstream)
  -access-log FILE|-        a line per request to FILE, or - for stderr
                            (default off), in -log-format
  -admin-addr ADDR          serve /metrics (Prometheus), /healthz and /readyz on
                            this separate address (default off)
  -admin-pprof              also serve Go's /debug/pprof there (loopback only)
  -pprof-addr ADDR          serve Go's /debug/pprof on this separate address,
                            which must be a loopback one (default off)
  -log-format text|json     log format on stderr (default text)
  -v                        also log a line per connection: flags, whether a
                            certificate was requested, its name and validity
  -version                  print the version and exit

Environment:
  SSLKEYLOGFILE             append TLS secrets to this file (for Wireshark)

Exit status: 0 after a clean shutdown, 1 when the server cannot start,
2 on a usage error.
`

func main() {
	tuneGC()
	os.Exit(run(os.Args[1:], os.Stderr))
}

// tuneGC sets a soft memory limit of 1 GiB, which makes the collector run
// sooner near it, unless GOMEMLIMIT says otherwise. GOGC stays Go's: a
// larger one while the heap is small (up to 400) saved no CPU per request
// on the gateway, measured on warmed servers, and cost about 2.5 % per
// handshake, its larger heap touching more memory (docs/performance.md).
func tuneGC() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(1 << 30)
	}
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		certFile   = fs.String("cert", "", "")
		acmeDomain = fs.String("acme-domain", "", "")
		acmeDir    = fs.String("acme-directory", "", "")
		acmeEmail  = fs.String("acme-email", "", "")
		acmeCache  = fs.String("acme-cache", "acme-cache", "")
		acmeCA     = fs.String("acme-cacert", "", "")
		httpAddr   = fs.String("http-addr", "", "")
		keyFile    = fs.String("key", "", "")
		clientCA   = fs.String("client-cacert", "", "")
		botCA      = fs.String("bot-cacert", "", "")
		clientCRL  = fs.String("client-crl", "", "")
		denyFile   = fs.String("deny", "", "")
		ticketKeys = fs.String("ticket-keys", "", "")
		proxyFrom  = fs.String("proxy-protocol-from", "", "")
		addr       = fs.String("listen-addr", "localhost:8775", "")
		policyName = fs.String("client-auth", "request", "")
		hsTimeout  = fs.Duration("handshake-timeout", 10*time.Second, "")
		maxHS      = fs.Int("max-handshakes", 1024, "")
		maxHello   = fs.String("max-hello-memory", "32MiB", "")
		rhTimeout  = fs.Duration("read-header-timeout", 10*time.Second, "")
		idle       = fs.Duration("idle-timeout", 2*time.Minute, "")
		grace      = fs.Duration("shutdown-timeout", 10*time.Second, "")
		drainDelay = fs.Duration("drain-delay", 0, "")
		logFormat  = fs.String("log-format", "text", "")
		pprofAddr  = fs.String("pprof-addr", "", "")
		adminAddr  = fs.String("admin-addr", "", "")
		adminPprof = fs.Bool("admin-pprof", false, "")
		verbose    = fs.Bool("v", false, "")
		showVer    = fs.Bool("version", false, "")
		upstream   = fs.String("upstream", "", "")
		upCert     = fs.String("upstream-cert", "", "")
		upKey      = fs.String("upstream-key", "", "")
		upCA       = fs.String("upstream-cacert", "", "")
		upTimeout  = fs.Duration("upstream-timeout", 30*time.Second, "")
		upConns    = fs.Int("upstream-max-conns", 1024, "")
		sigAgents  = fs.String("signature-agents", "", "")
		sigAgentCA = fs.String("signature-agents-cacert", "", "")
		sigSkew    = fs.Duration("signature-skew", time.Minute, "")
		sigValid   = fs.Duration("signature-max-validity", time.Hour, "")
		sigStale   = fs.Duration("signature-keys-max-stale", time.Hour, "")
		sigDir     = fs.String("signature-directory", "", "")
		xfcc       = fs.Bool("xfcc", false, "")
		maxReq     = fs.String("max-request-body", "10MiB", "")
		maxResp    = fs.String("max-response-body", "", "")
		pages      = fs.String("pages", "", "")
		accessLog  = fs.String("access-log", "", "")
		redisURL   = fs.String("redis", "", "")
		redisCA    = fs.String("redis-cacert", "", "")
		redisTime  = fs.Duration("redis-timeout", 50*time.Millisecond, "")
	)
	misuse := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "server: "+format+"\n", a...)
		fmt.Fprint(stderr, "run 'server -h' for usage\n")
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			return 0
		}
		return misuse("%v", err)
	}
	if fs.NArg() > 0 {
		return misuse("unexpected argument %q", fs.Arg(0))
	}
	if *showVer {
		fmt.Fprintln(os.Stdout, reqmtls.Version("server"))
		return 0
	}
	switch {
	case *acmeDomain != "" && (*certFile != "" || *keyFile != ""):
		return misuse("-acme-domain replaces -cert and -key: give one or the other")
	case *acmeDomain == "" && (*certFile == "" || *keyFile == ""):
		return misuse("-cert and -key are required (or -acme-domain)")
	case *acmeDomain == "" && (*acmeDir != "" || *acmeEmail != "" || *acmeCA != ""):
		return misuse("-acme-directory, -acme-email and -acme-cacert go with -acme-domain")
	}
	policy, err := server.ParsePolicy(*policyName)
	if err != nil {
		return misuse("-client-auth: %v", err)
	}
	if *clientCRL != "" && *clientCA == "" && *botCA == "" {
		return misuse("-client-crl needs -client-cacert or -bot-cacert: the CRLs are checked against their CAs")
	}
	if policy != server.PolicyRequest && *clientCA == "" && *botCA == "" && *sigAgents == "" {
		return misuse("-client-auth %s needs -client-cacert, -bot-cacert or -signature-agents (agents vouch for their certificates)", policy)
	}
	if policy == server.PolicyAlways && *clientCA == "" && *sigAgents == "" {
		return misuse("-client-auth always needs -client-cacert (for clients that send no flag) or -signature-agents")
	}
	if *pprofAddr != "" {
		if err := checkLoopback(*pprofAddr); err != nil {
			return misuse("-pprof-addr: %v", err)
		}
	}
	if *adminPprof {
		if *adminAddr == "" {
			return misuse("-admin-pprof needs -admin-addr")
		}
		if err := checkLoopback(*adminAddr); err != nil {
			return misuse("-admin-pprof: -admin-addr %v", err)
		}
	}
	proxyPrefixes, err := parsePrefixes(*proxyFrom)
	if err != nil {
		return misuse("-proxy-protocol-from: %v", err)
	}
	if *maxHS <= 0 {
		return misuse("-max-handshakes must be positive, not %d", *maxHS)
	}
	maxHelloBytes, err := parseSize(*maxHello)
	if err != nil || maxHelloBytes <= 0 {
		return misuse("-max-hello-memory: want a positive size, not %q", *maxHello)
	}
	maxReqBytes, err := parseSize(*maxReq)
	if err != nil {
		return misuse("-max-request-body: %v", err)
	}
	maxRespBytes, err := parseSize(*maxResp)
	if err != nil {
		return misuse("-max-response-body: %v", err)
	}
	pagesPath := *pages
	switch {
	case pagesPath == "" && *upstream == "":
		pagesPath = "/"
	case pagesPath == "off" || pagesPath == "":
		pagesPath = ""
	case !strings.HasPrefix(pagesPath, "/"):
		return misuse("-pages must be a path starting with / or off, not %q", pagesPath)
	default:
		if !strings.HasSuffix(pagesPath, "/") {
			pagesPath += "/"
		}
	}
	if *upstream == "" && pagesPath == "" {
		return misuse("-pages off leaves nothing to serve without -upstream")
	}
	if *upConns < 0 {
		return misuse("-upstream-max-conns must be 0 (no cap) or more, not %d", *upConns)
	}
	if *sigSkew <= 0 || *sigSkew > time.Hour {
		return misuse("-signature-skew must be positive and at most an hour, not %v", *sigSkew)
	}
	if *sigValid <= 0 {
		return misuse("-signature-max-validity must be positive, not %v", *sigValid)
	}
	if *sigStale <= 0 {
		return misuse("-signature-keys-max-stale must be positive, not %v", *sigStale)
	}
	if *redisCA != "" && !strings.HasPrefix(*redisURL, "rediss://") {
		return misuse("-redis-cacert goes with a -redis rediss:// URL")
	}
	if *redisTime <= 0 {
		return misuse("-redis-timeout must be positive, not %v", *redisTime)
	}
	if *sigAgentCA != "" && *sigAgents == "" {
		return misuse("-signature-agents-cacert goes with -signature-agents")
	}
	if *upstream == "" && (*upCert != "" || *upKey != "" || *upCA != "" || *xfcc || *maxResp != "") {
		return misuse("-upstream-* , -xfcc and -max-response-body go with -upstream")
	}
	for name, d := range map[string]time.Duration{"-upstream-timeout": *upTimeout, "-handshake-timeout": *hsTimeout, "-read-header-timeout": *rhTimeout, "-idle-timeout": *idle, "-shutdown-timeout": *grace} {
		if d <= 0 {
			return misuse("%s must be positive, not %v", name, d)
		}
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	case "json":
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	default:
		return misuse("-log-format must be text or json, not %q", *logFormat)
	}
	log := slog.New(handler)

	var dirKeys []string
	if *sigDir != "" {
		dirKeys = strings.Split(*sigDir, ",")
	}
	cfg := server.Config{
		SignatureDirectoryKeyFiles: dirKeys,
		SignatureAgentsFile:        *sigAgents, SignatureAgentsCAFile: *sigAgentCA, SignatureSkew: *sigSkew,
		SignatureMaxValidity:  *sigValid,
		SignatureKeysMaxStale: *sigStale,
		Redis:                 *redisURL, RedisCAFile: *redisCA, RedisTimeout: *redisTime,
		CertFile: *certFile, KeyFile: *keyFile, ClientCAFile: *clientCA, BotCAFile: *botCA, ClientCRLFile: *clientCRL, DenyFile: *denyFile, TicketKeysFile: *ticketKeys,
		Policy:            policy,
		ProxyProtocolFrom: proxyPrefixes,
		DrainDelay:        *drainDelay,
		HandshakeTimeout:  *hsTimeout,
		MaxHandshakes:     *maxHS,
		MaxHelloBytes:     maxHelloBytes,
		ReadHeaderTimeout: *rhTimeout,
		IdleTimeout:       *idle,
		Logger:            log,
	}
	switch *accessLog {
	case "", "off":
	case "-":
		cfg.AccessLog = server.NewAccessLog(stderr, *logFormat == "json")
	default:
		f, err := os.OpenFile(*accessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			log.Error("cannot open the access log", "file", *accessLog, "err", err)
			return 1
		}
		defer f.Close()
		// Buffered: a write per line would cost a system call per
		// request. Written 100 ms after the first line it holds, and
		// at exit (SIGTERM too).
		lw := logbuf.New(f, 100*time.Millisecond)
		lw.OnError = func(err error, dropped int) {
			if err != nil {
				log.Error("cannot write the access log: lines dropped until it works again", "file", *accessLog, "err", err, "bytes_dropped", dropped)
			} else {
				log.Info("the access log is written again", "file", *accessLog, "bytes_dropped", dropped)
			}
		}
		defer lw.Close()
		cfg.AccessLog = server.NewAccessLog(lw, *logFormat == "json")
	}
	if *upstream != "" {
		gw, err := server.NewGateway(server.GatewayConfig{
			Upstream:         *upstream,
			UpstreamCertFile: *upCert, UpstreamKeyFile: *upKey, UpstreamCAFile: *upCA,
			XFCC:                  *xfcc,
			MaxRequestBody:        maxReqBytes,
			MaxResponseBody:       maxRespBytes,
			ResponseHeaderTimeout: *upTimeout,
			MaxUpstreamConns:      cmp.Or(*upConns, -1),
			Logger:                log,
		})
		if err != nil {
			log.Error("cannot start", "err", err)
			return 1
		}
		cfg.Handler, cfg.PagesPath = gw, pagesPath
	} else if pagesPath != "/" {
		cfg.Handler = http.NotFoundHandler()
		cfg.PagesPath = pagesPath
	}
	if *acmeDomain != "" {
		ac := &server.ACMEConfig{Domains: strings.Split(*acmeDomain, ","), DirectoryURL: *acmeDir, Email: *acmeEmail, CacheDir: *acmeCache}
		if *acmeCA != "" {
			if ac.RootCAs, err = reqmtls.LoadCertPool(*acmeCA); err != nil {
				log.Error("cannot start", "err", fmt.Errorf("-acme-cacert: %w", err))
				return 1
			}
		}
		cfg.ACME = ac
	}
	if name := os.Getenv("SSLKEYLOGFILE"); name != "" {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			log.Error("cannot open SSLKEYLOGFILE", "file", name, "err", err)
			return 1
		}
		defer f.Close()
		cfg.KeyLog = f
		log.Warn("writing TLS secrets to SSLKEYLOGFILE: anyone with this file can decrypt the traffic", "file", name)
	}
	srv, err := server.New(cfg)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("cannot listen", "addr", *addr, "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		if err := srv.Watch(ctx); err != nil {
			log.Warn("not watching certificate files", "err", err)
		}
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			srv.Reload("SIGHUP")
		}
	}()
	if *pprofAddr != "" {
		pl, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			log.Error("cannot listen for pprof", "addr", *pprofAddr, "err", err)
			return 1
		}
		log.Info("pprof listening", "addr", pl.Addr().String())
		go (&http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}).Serve(pl)
	}
	attrs := []any{"addr", ln.Addr().String(), "client_auth", policy.String()}
	if *upstream != "" {
		attrs = append(attrs, "upstream", *upstream)
	}
	if *httpAddr != "" {
		hl, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			log.Error("cannot listen for plain HTTP", "addr", *httpAddr, "err", err)
			return 1
		}
		log.Info("http listening", "addr", hl.Addr().String())
		plain := &http.Server{Handler: srv.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second}
		go plain.Serve(hl)
		defer plain.Close()
	}
	if *adminAddr != "" {
		al, err := net.Listen("tcp", *adminAddr)
		if err != nil {
			log.Error("cannot listen for the admin endpoints", "addr", *adminAddr, "err", err)
			return 1
		}
		log.Info("admin listening", "addr", al.Addr().String())
		admin := &http.Server{Handler: srv.AdminHandler(*adminPprof), ReadHeaderTimeout: 10 * time.Second}
		go admin.Serve(al)
		defer admin.Close()
	}
	// "listening" says the server is ready, reload included: a file
	// changed right after it is seen at once.
	select {
	case <-srv.Watching():
	case <-time.After(5 * time.Second):
	}
	log.Info("listening", attrs...)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if err != nil {
			log.Error("serve failed", "err", err)
			return 1
		}
		return 0
	case <-ctx.Done():
	}
	stop()
	log.Info("shutting down", "grace", grace.String())
	sctx, cancel := context.WithTimeout(context.Background(), *drainDelay+*grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown cut requests short", "err", err)
	}
	<-errc
	log.Info("stopped")
	return 0
}

// checkLoopback accepts host:port addresses whose host is a loopback IP or
// "localhost": pprof exposes the process's memory and must not face a
// network.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address (use 127.0.0.1:PORT, [::1]:PORT or localhost:PORT)", addr)
}

// parseSize parses a byte count: digits, optionally followed by KiB, MiB or
// GiB (or k, M, G, as powers of 1024). Empty and 0 are no limit, returned
// as -1; a size past what 63 bits hold is an error.
func parseSize(s string) (int64, error) {
	if s == "" {
		return -1, nil
	}
	num := strings.TrimRight(s, "KMGiBkb")
	unit := s[len(num):]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB or GiB)", s)
	}
	shift, ok := map[string]uint{"": 0, "k": 10, "K": 10, "KiB": 10, "M": 20, "MiB": 20, "G": 30, "GiB": 30}[unit]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q (want KiB, MiB or GiB)", s, unit)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q is too large (at most %d bytes)", s, int64(math.MaxInt64))
	}
	if n == 0 {
		return -1, nil
	}
	return n << shift, nil
}

// parsePrefixes parses a comma-separated list of CIDR prefixes or single
// addresses.
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is neither an address nor a CIDR prefix", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
