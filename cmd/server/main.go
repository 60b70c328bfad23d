// Command server is the request-mTLS test server: HTTPS with HTTP/2 that asks
// for a client certificate only when the client sets the request-mTLS flag,
// and reports what it saw at /debug.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // for -pprof-addr only: the server's own mux is separate
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/config"
	"github.com/req-mtls/req-mtls/internal/logbuf"
	"github.com/req-mtls/req-mtls/server"
)

const usage = `usage: server -cert FILE -key FILE [-client-cacert FILE] [options]
       server -config FILE [-check]

Serves HTTPS (HTTP/2 and HTTP/1.1) on -listen-addr. A client that sets the
request-mTLS flag (TLS flag 80) is sent a CertificateRequest; no one else is,
unless -client-auth always. GET /debug reports what the server saw of the
connection (add ?format=json for everything); GET / explains it in a browser.

With -upstream it is a gateway: every request goes to the origin, with the
client's verified certificate (RFC 9440 Client-Cert) and the handshake's
decision in Req-Mtls-* fields; the server's own pages are off unless -pages.

Certificate files are reloaded when they change, and on SIGHUP; a bad file
keeps the last good state. SIGINT or SIGTERM shuts down gracefully.

With -config, every setting comes from a YAML file instead, whose keys are
the flags' names with _ for - (listen_addr, client_cacert, ...), plus the
site's rules and several sites on one address (docs/config.md); the file is
read again on SIGHUP and when it changes, and a bad one keeps the running
configuration.

Options:
  -config FILE              read the settings from this YAML file (no other
                            flags with it)
  -check                    load the settings and every file they name,
                            report, and exit: 0 when valid, 1 otherwise
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
                            Web-Bot-Auth-Agent and -Keyid; the agents also vouch
                            for client certificates naming them (store agent)
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
                            at any instance is refused, and limit rules'
                            buckets; redis://[user:pass@]host:port[/db],
                            rediss:// (TLS), unix:///PATH, a Cluster
                            (redis://h1:p1?addr=h2:p2&addr=...) or Sentinels
                            (...&master_name=NAME) (default: none)
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
	// One model: every flag fills a field of cfg, as the file's key of
	// the same name would (internal/config).
	cfg := config.Defaults()
	cfg.Flags(fs)
	var (
		configFile = fs.String("config", "", "")
		check      = fs.Bool("check", false, "")
		showVer    = fs.Bool("version", false, "")
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
	if *configFile != "" {
		var others []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "config" && f.Name != "check" {
				others = append(others, "-"+f.Name)
			}
		})
		if len(others) > 0 {
			return misuse("-config FILE takes every setting from the file: give %s there (as %s)", strings.Join(others, ", "), strings.ReplaceAll(strings.TrimPrefix(others[0], "-"), "-", "_"))
		}
		f, err := loadConfig(*configFile)
		if err != nil {
			printErrors(stderr, err)
			return 1
		}
		cfg = f.Config
	} else if probs := cfg.Validate(func(key string) string { return "-" + config.FlagName(key) }); len(probs) > 0 {
		for _, p := range probs[:len(probs)-1] {
			fmt.Fprintf(stderr, "server: %s\n", p.Msg)
		}
		return misuse("%s", probs[len(probs)-1].Msg)
	}
	level := slog.LevelInfo
	if cfg.Verbose {
		level = slog.LevelDebug
	}
	var handler slog.Handler
	if cfg.LogFormat == "json" {
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	} else {
		handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(handler)
	sc := cfg.Config
	sc.Logger = log
	if *check {
		// Load every file as serving would, and stop there.
		if _, err := build(&cfg, &sc, log); err != nil {
			printErrors(stderr, err)
			return 1
		}
		if _, err := server.New(sc); err != nil {
			printErrors(stderr, err)
			return 1
		}
		fmt.Fprintf(stderr, "server: the configuration is valid\n")
		return 0
	}
	switch cfg.AccessLog {
	case "", "off":
	case "-":
		sc.AccessLog = server.NewAccessLog(stderr, cfg.LogFormat == "json")
	default:
		f, err := os.OpenFile(cfg.AccessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			log.Error("cannot open the access log", "file", cfg.AccessLog, "err", err)
			return 1
		}
		defer f.Close()
		// Buffered: a write per line would cost a system call per
		// request. Written 100 ms after the first line it holds, and
		// at exit (SIGTERM too), by a goroutine of its own: a file
		// that takes nothing (a FIFO nobody reads) holds up no
		// request, and the exit waits for it at most 5 s.
		lw := logbuf.New(f, 100*time.Millisecond)
		lw.OnError = func(err error, dropped int) {
			if err != nil {
				log.Error("cannot write the access log: lines dropped until it works again", "file", cfg.AccessLog, "err", err, "bytes_dropped", dropped)
			} else {
				log.Info("the access log is written again", "file", cfg.AccessLog, "bytes_dropped", dropped)
			}
		}
		defer func() {
			// (A failed write was reported by OnError.)
			if err := lw.Close(); errors.Is(err, logbuf.ErrCloseTimeout) {
				log.Error("cannot write the access log at exit", "file", cfg.AccessLog, "err", err)
			}
		}()
		sc.AccessLog = server.NewAccessLog(lw, cfg.LogFormat == "json")
		sc.AccessLogDropped = lw.Dropped
	}
	if _, err := build(&cfg, &sc, log); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if name := os.Getenv("SSLKEYLOGFILE"); name != "" {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			log.Error("cannot open SSLKEYLOGFILE", "file", name, "err", err)
			return 1
		}
		defer f.Close()
		sc.KeyLog = f
		log.Warn("writing TLS secrets to SSLKEYLOGFILE: anyone with this file can decrypt the traffic", "file", name)
	}
	srv, err := server.New(sc)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		log.Error("cannot listen", "addr", cfg.ListenAddr, "err", err)
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
	var reload func(trigger string)
	if *configFile != "" {
		reload = configReloader(*configFile, cfg, srv, log)
		go watchFile(ctx, *configFile, time.Second, func() { reload("file change") })
	}
	go func() {
		for range hup {
			srv.Reload("SIGHUP")
			if reload != nil {
				reload("SIGHUP")
			}
		}
	}()
	if cfg.PprofAddr != "" {
		pl, err := net.Listen("tcp", cfg.PprofAddr)
		if err != nil {
			log.Error("cannot listen for pprof", "addr", cfg.PprofAddr, "err", err)
			return 1
		}
		log.Info("pprof listening", "addr", pl.Addr().String())
		go (&http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}).Serve(pl)
	}
	attrs := []any{"addr", ln.Addr().String(), "client_auth", cfg.Policy.String()}
	if cfg.Upstream != "" {
		attrs = append(attrs, "upstream", cfg.Upstream)
	}
	if len(cfg.Sites) > 0 {
		attrs = append(attrs, "sites", len(cfg.Sites))
	}
	if len(cfg.Rules) > 0 {
		attrs = append(attrs, "rules", len(cfg.Rules))
	}
	if cfg.HTTPAddr != "" {
		hl, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			log.Error("cannot listen for plain HTTP", "addr", cfg.HTTPAddr, "err", err)
			return 1
		}
		log.Info("http listening", "addr", hl.Addr().String())
		plain := &http.Server{Handler: srv.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second}
		go plain.Serve(hl)
		defer plain.Close()
	}
	if cfg.AdminAddr != "" {
		al, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			log.Error("cannot listen for the admin endpoints", "addr", cfg.AdminAddr, "err", err)
			return 1
		}
		log.Info("admin listening", "addr", al.Addr().String())
		admin := &http.Server{Handler: srv.AdminHandler(cfg.AdminPprof), ReadHeaderTimeout: 10 * time.Second}
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
	log.Info("shutting down", "grace", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.DrainDelay+cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown cut requests short", "err", err)
	}
	<-errc
	log.Info("stopped")
	return 0
}

// printErrors writes err on stderr, a "server: " line for each of its
// lines (a file's problems are one error of a line each).
func printErrors(stderr io.Writer, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(stderr, "server: %s\n", line)
	}
}

// build completes sc, the server's part of cfg, with what the other keys
// make: the gateway (with upstream), the pages' handler, ACME.
func build(cfg *config.Config, sc *server.Config, log *slog.Logger) (http.Handler, error) {
	sc.PagesPath = cfg.PagesPath
	gateway := func(upstream string) (http.Handler, error) {
		gc := cfg.GatewayConfig
		gc.Upstream, gc.Logger = upstream, log
		return server.NewGateway(gc)
	}
	if cfg.Upstream != "" {
		gw, err := gateway(cfg.Upstream)
		if err != nil {
			return nil, err
		}
		sc.Handler = gw
	} else if cfg.PagesPath != "/" {
		sc.Handler = http.NotFoundHandler()
	}
	// Each site with an origin of its own gets a gateway to it; the others
	// take the top level's handler. (A copy: cfg's sites stay as read.)
	sc.Sites = slices.Clone(sc.Sites)
	for i, st := range sc.Sites {
		if st.Upstream != "" && st.Upstream != cfg.Upstream {
			gw, err := gateway(st.Upstream)
			if err != nil {
				return nil, fmt.Errorf("sites[%d]: %w", i, err)
			}
			sc.Sites[i].Handler = gw
		}
	}
	if len(cfg.Domains) > 0 {
		ac := cfg.ACMEConfig
		if cfg.ACMECACert != "" {
			var err error
			if ac.RootCAs, err = reqmtls.LoadCertPool(cfg.ACMECACert); err != nil {
				return nil, fmt.Errorf("-acme-cacert: %w", err)
			}
		}
		sc.ACME = &ac
	}
	return sc.Handler, nil
}
