// Command client makes HTTPS requests whose ClientHello carries TLS flags,
// such as the request-mTLS flag 80, and presents a client certificate when
// the server asks for one.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	reqmtls "github.com/req-mtls/req-mtls"
)

const usage = `usage: client [options]

Sends an HTTPS request (HTTP/2 when the server offers it, else HTTP/1.1) and
prints the response body on stdout. With -tlsflags 80 the ClientHello carries
the request-mTLS flag: "I hold a client certificate; ask me for it". The
certificate (-cert, -key) is sent whenever the server asks for one.

Connection:
  -connect URL              URL to request (default https://localhost:8775/)
  -tlsflags LIST            TLS flags to send, comma separated, decimal or 0x
                            hex: 80, 0x50, 8,170,12 (default: none, and no
                            tls_flags extension)
  -tlsflags-codepoint N     extension codepoint: 0xfe01 (default) or 62
  -cert FILE, -key FILE     client certificate and key (PEM); re-read when
                            they change between requests
  -server-cacert FILE       roots for the server certificate (default: the
                            system roots)
  -servername NAME          send NAME as SNI and verify the server's
                            certificate for it, instead of the URL's host
                            (the Host header stays the URL's)
  --resolve HOST:PORT:ADDR  connect to ADDR for HOST:PORT, keeping the URL's
                            host for SNI, verification and Host, as curl's
                            --resolve (repeatable; ADDR may be [IPv6])
  -sign-key FILE            sign every request with Web Bot Auth (HTTP Message
                            Signatures, RFC 9421): an Ed25519 key, PEM (openssl
                            genpkey -algorithm ed25519) or a JWK; in -listen
                            mode too
  -signature-agent URL      where the key's directory lives, sent as
                            Signature-Agent and covered by the signature
  -signature-agent-dict     send Signature-Agent as the working group's
                            dictionary (sig1="URL") rather than a string
  -x URL, --proxy URL       go through this proxy (http://[USER:PASS@]HOST:PORT,
                            https:// for TLS to the proxy, socks5:// or
                            socks5h://), for every host, loopback ones too;
                            without it, HTTPS_PROXY, HTTP_PROXY and NO_PROXY
                            are honoured as by curl and Go (loopback hosts go
                            direct)
  -k                        do not verify the server's certificate (anyone
                            on the path can pose as the server; a warning
                            says so)
  -timeout D                limit for each request, handshake included
                            (default 30s)

Request:
  -X METHOD                 method (default GET, or POST with -d)
  -d DATA                   request body; -d @FILE reads it from FILE
  -H 'Name: value'          add a header (repeatable)
  -o FILE                   write the body to FILE instead of stdout

Reporting:
  -i                        print the response's status line and headers
                            before the body
  -v                        print a handshake summary on stderr, with the
                            server's certificate (subject, issuer, names,
                            expiry, SHA-256)
  -json                     print the handshake summary, status, headers and
                            body as JSON on stdout (with -n: the load
                            summary); a failure as {"error": ..., "alert":
                            ..., "hint": ...}
  -version                  print the version and exit

Forward proxy (any HTTP client gets request mTLS through it):
  -listen ADDR              run an HTTP forward proxy on ADDR (127.0.0.1:8080)
                            instead of one request: CONNECT tunnels are
                            terminated with a leaf signed by the proxy's root,
                            and each site is reached with -tlsflags (default
                            80 here; "" sends none), -cert/-key,
                            -server-cacert; http:// requests are forwarded
  -mitm-ca DIR              the proxy's root, ca.crt and ca.key, made on first
                            run (default: ~/.config/req-mtls/forward-proxy-ca)
  -proxy-auth FILE          require Basic credentials (user:password lines);
                            needed to listen on a non-loopback address;
                            read again when it changes and at SIGHUP
  -flag-hosts PATTERNS      hosts that get the flags and the certificate,
                            comma-separated (*.example.com; default: all)
  -allow-destinations LIST  CIDR prefixes or addresses, comma-separated, that
                            clients reaching the proxy off loopback may
                            connect to all the same: by default they get a
                            403 for loopback, link-local and unspecified
                            addresses and the proxy host's own
  -shutdown-timeout D       at SIGTERM, how long requests in flight have to
                            finish before they are cut (default 10s)
  -idle-timeout D           close a client's connection, or a tunnel, idle
                            for D (default 2m)
  -max-tunnels N            CONNECT tunnels open at once; past them a CONNECT
                            gets a 503 (default 1024)

Load (for operators):
  -n N                      send N requests (default 1) and print a summary
  -c N                      with N concurrent workers (default 1)
  -keepalive                reuse each worker's connection (default: a new
                            connection for every request)
  -resume                   resume TLS sessions on new connections

Environment:
  SSLKEYLOGFILE             append TLS secrets to this file (for Wireshark)

Exit status: 0 on success; 1 when the request fails or the status is 400 or
more (the body is still printed); 2 on a usage error.
Failures are explained on stderr as 'client: error: ...', with a
'client: hint: ...' line when there is something to try.

Examples:
  client -tlsflags 80 -cert client.crt -key client.key \
         -server-cacert rootCA.crt -connect https://localhost:8775/debug
  client -tlsflags 80 -cert client.crt -key client.key \
         -connect https://req-mtls.research.cloudflare.com/debug
  client -n 200 -c 2 -resume -tlsflags 80 -cert client.crt -key client.key \
         -server-cacert rootCA.crt -connect https://localhost:8775/debug
`

// resolveList is --resolve HOST:PORT:ADDR, repeatable, as a map from
// HOST:PORT to ADDR:PORT.
type resolveList map[string]string

func (r resolveList) String() string { return fmt.Sprint(map[string]string(r)) }
func (r resolveList) Set(v string) error {
	key, addr, err := parseResolve(v)
	if err != nil {
		return err
	}
	r[key] = addr
	return nil
}

// parseResolve reads curl's HOST:PORT:ADDR; HOST and ADDR may be IPv6
// addresses in brackets.
func parseResolve(v string) (key, addr string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("%q is not HOST:PORT:ADDR: %s", v, why)
	}
	rest := v
	var host string
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 || !strings.HasPrefix(rest[end+1:], ":") {
			return bad("unclosed [")
		}
		host, rest = rest[1:end], rest[end+2:]
	} else {
		var ok bool
		if host, rest, ok = strings.Cut(rest, ":"); !ok {
			return bad("no port")
		}
	}
	port, a, ok := strings.Cut(rest, ":")
	if !ok {
		return bad("no address")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return bad(fmt.Sprintf("port %q is not a number from 1 to 65535", port))
	}
	a = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
	switch {
	case host == "":
		return bad("empty host")
	case a == "":
		return bad("empty address")
	case strings.Contains(a, ","):
		return bad("one address only")
	}
	return net.JoinHostPort(strings.ToLower(host), port), net.JoinHostPort(a, port), nil
}

type headerList []string

func (h *headerList) String() string { return strings.Join(*h, "; ") }
func (h *headerList) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("header %q is not 'Name: value'", v)
	}
	*h = append(*h, v)
	return nil
}

// cli is one run of the command, with its output streams.
type cli struct {
	stdout, stderr io.Writer
	// json prints failures as a JSON object on stdout too.
	json bool
}

func (c *cli) errorf(format string, a ...any) {
	fmt.Fprintf(c.stderr, "client: error: "+format+"\n", a...)
}
func (c *cli) hintf(format string, a ...any) {
	fmt.Fprintf(c.stderr, "client: hint: "+format+"\n", a...)
}
func (c *cli) warnf(format string, a ...any) {
	fmt.Fprintf(c.stderr, "client: warning: "+format+"\n", a...)
}

func (c *cli) misuse(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "client: "+format+"\n", a...)
	fmt.Fprint(c.stderr, "run 'client -h' for usage\n")
	return 2
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit((&cli{stdout: os.Stdout, stderr: os.Stderr}).run(ctx, os.Args[1:]))
}

func (c *cli) run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var headers headerList
	var (
		connect   = fs.String("connect", "https://localhost:8775/", "")
		flagList  = fs.String("tlsflags", "", "")
		codepoint = fs.String("tlsflags-codepoint", "0xfe01", "")
		certFile  = fs.String("cert", "", "")
		keyFile   = fs.String("key", "", "")
		serverCA  = fs.String("server-cacert", "", "")
		timeout   = fs.Duration("timeout", 30*time.Second, "")
		method    = fs.String("X", "", "")
		data      = fs.String("d", "", "")
		outFile   = fs.String("o", "", "")
		verbose   = fs.Bool("v", false, "")
		asJSON    = fs.Bool("json", false, "")
		headersOn = fs.Bool("i", false, "")
		showVer   = fs.Bool("version", false, "")
		n         = fs.Int("n", 1, "")
		conc      = fs.Int("c", 1, "")
		keepalive = fs.Bool("keepalive", false, "")
		resume    = fs.Bool("resume", false, "")
	)
	fs.Var(&headers, "H", "")
	resolve := resolveList{}
	fs.Var(resolve, "resolve", "")
	serverName := fs.String("servername", "", "")
	proxyURL := fs.String("x", "", "")
	signKey := fs.String("sign-key", "", "")
	signAgent := fs.String("signature-agent", "", "")
	signDict := fs.Bool("signature-agent-dict", false, "")
	listen := fs.String("listen", "", "")
	mitmCA := fs.String("mitm-ca", "", "")
	proxyAuth := fs.String("proxy-auth", "", "")
	flagHosts := fs.String("flag-hosts", "", "")
	allowDest := fs.String("allow-destinations", "", "")
	grace := fs.Duration("shutdown-timeout", 10*time.Second, "")
	idle := fs.Duration("idle-timeout", 2*time.Minute, "")
	maxTunnels := fs.Int("max-tunnels", reqmtls.DefaultMaxTunnels, "")
	fs.StringVar(proxyURL, "proxy", "", "")
	insecure := fs.Bool("k", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, usage)
			return 0
		}
		return c.misuse("%v", err)
	}
	if fs.NArg() > 0 {
		return c.misuse("unexpected argument %q (the URL goes after -connect)", fs.Arg(0))
	}
	if *showVer {
		fmt.Fprintln(c.stdout, reqmtls.Version("client"))
		return 0
	}
	cfg := reqmtls.ClientConfig{Timeout: *timeout, DisableResumption: !*resume, CertFile: *certFile, KeyFile: *keyFile, Warn: c.warnf,
		ServerName: *serverName, InsecureSkipVerify: *insecure, Resolve: resolve}
	if *flagList != "" {
		flags, err := reqmtls.ParseFlags(*flagList)
		if err != nil {
			return c.misuse("-tlsflags: %v", strings.TrimPrefix(err.Error(), "tlsflags: "))
		}
		cfg.Flags = flags
	}
	if *signKey != "" {
		k, err := reqmtls.LoadSignatureKey(*signKey)
		if err != nil {
			return c.misuse("-sign-key: %v", err)
		}
		cfg.SignatureKey, cfg.SignatureAgent, cfg.SignatureAgentDictionary = k, *signAgent, *signDict
	} else if *signAgent != "" || *signDict {
		return c.misuse("-signature-agent and -signature-agent-dict go with -sign-key")
	}
	if *signAgent != "" {
		if u, err := url.Parse(*signAgent); err != nil || u.Scheme != "https" || u.Host == "" {
			return c.misuse("-signature-agent %q: want the https:// URL where the key's directory lives", *signAgent)
		}
	}
	if *proxyURL != "" {
		pu, err := url.Parse(*proxyURL)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https" && pu.Scheme != "socks5" && pu.Scheme != "socks5h") || pu.Host == "" {
			return c.misuse("-x %q is not a proxy URL (http://HOST:PORT, https://, socks5:// or socks5h://)", *proxyURL)
		}
		cfg.Proxy = http.ProxyURL(pu)
	}
	cp, err := strconv.ParseUint(*codepoint, 0, 16)
	if err != nil || (uint16(cp) != reqmtls.CodepointExperimental && uint16(cp) != reqmtls.CodepointBoringSSL) {
		return c.misuse("-tlsflags-codepoint must be 0xfe01 or 62, not %q", *codepoint)
	}
	cfg.Codepoint = uint16(cp)
	u, err := url.Parse(*connect)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return c.misuse("-connect %q is not an https:// URL", *connect)
	}
	if *timeout <= 0 {
		return c.misuse("-timeout must be positive")
	}
	if *n < 1 || *conc < 1 {
		return c.misuse("-n and -c must be at least 1")
	}
	if (*certFile == "") != (*keyFile == "") {
		return c.misuse("-cert and -key go together")
	}
	if *insecure && *serverCA != "" {
		return c.misuse("-k skips the verification that -server-cacert is for: give one or the other")
	}
	if len(resolve) > 0 {
		port := u.Port()
		if port == "" {
			port = "443"
		}
		if _, ok := resolve[net.JoinHostPort(strings.ToLower(u.Hostname()), port)]; !ok {
			c.warnf("no --resolve entry is for %s, the URL's host and port: connecting to it as usual", net.JoinHostPort(u.Hostname(), port))
		}
	}
	if *insecure {
		c.warnf("-k: the server's certificate is not verified; anyone on the path can pose as the server")
	}
	c.json = *asJSON && *n == 1
	req := &Request{URL: u, Method: *method, Header: http.Header{}}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Add(textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name)), strings.TrimSpace(value))
	}
	if *data != "" {
		if name, ok := strings.CutPrefix(*data, "@"); ok {
			if req.Body, err = os.ReadFile(name); err != nil {
				return c.fail(fmt.Errorf("read -d file: %w", err))
			}
		} else {
			req.Body = []byte(*data)
		}
		if req.Method == "" {
			req.Method = http.MethodPost
		}
		if req.Header.Get("Content-Type") == "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	}
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	if *serverCA != "" {
		if cfg.RootCAs, err = reqmtls.LoadCertPool(*serverCA); err != nil {
			return c.fail(fmt.Errorf("-server-cacert: %w", err))
		}
	}
	if name := os.Getenv("SSLKEYLOGFILE"); name != "" {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return c.fail(fmt.Errorf("open SSLKEYLOGFILE: %w", err))
		}
		defer f.Close()
		cfg.KeyLog = f
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *listen != "" {
		if !set["tlsflags"] {
			cfg.Flags = reqmtls.RequestMTLSFlags // the proxy's default: flag 80
		}
		if cfg.Flags.Has(reqmtls.FlagRequestMTLS) && cfg.CertFile == "" {
			c.hintf("flag 80 tells sites you hold a client certificate, but no -cert/-key was given: none will be sent")
		}
		if *grace <= 0 || *idle <= 0 {
			return c.misuse("-shutdown-timeout and -idle-timeout must be positive")
		}
		if *maxTunnels < 1 {
			return c.misuse("-max-tunnels must be at least 1")
		}
		return c.serveProxy(ctx, cfg, proxyOpts{listen: *listen, caDir: *mitmCA, authFile: *proxyAuth, flagHosts: *flagHosts, allow: *allowDest,
			grace: *grace, idle: *idle, maxTunnels: *maxTunnels})
	}
	for _, name := range []string{"mitm-ca", "proxy-auth", "flag-hosts", "allow-destinations", "shutdown-timeout", "idle-timeout", "max-tunnels"} {
		if set[name] {
			return c.misuse("-%s: the forward proxy's flags go with -listen", name)
		}
	}
	cl, err := reqmtls.NewDialer(cfg)
	if err != nil {
		return c.fail(err)
	}
	if cfg.Flags.Has(reqmtls.FlagRequestMTLS) && !cl.HasCertificate() {
		c.hintf("flag 80 tells the server you hold a client certificate, but no -cert/-key was given: none will be sent")
	}
	if *n > 1 {
		return c.load(ctx, cl, req, Load{N: *n, Concurrency: *conc, KeepAlive: *keepalive, MaxBody: 64 << 20}, *asJSON)
	}
	return c.single(ctx, cl, req, *outFile, *verbose, *headersOn)
}

func (c *cli) single(ctx context.Context, cl *reqmtls.Dialer, r *Request, outFile string, verbose, withHeaders bool) int {
	cn, err := cl.Dial(ctx, r.URL)
	if err != nil {
		return c.fail(err)
	}
	defer cn.Close()
	hs := cn.Handshake()
	if verbose {
		c.printHandshake(hs)
	}
	req, err := BuildRequest(r)
	if err != nil {
		return c.fail(err, hs)
	}
	resp, body, err := do(ctx, cn, req, 256<<20)
	if err != nil {
		return c.fail(err, hs)
	}
	if verbose {
		fmt.Fprintf(c.stderr, "* %s %d %s\n", resp.Proto, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	var statusErr string
	if resp.StatusCode >= 400 {
		statusErr = fmt.Sprintf("server answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	var head []byte
	if withHeaders {
		head = headerBlock(resp)
	}
	switch {
	case c.json:
		out, _ := json.MarshalIndent(struct {
			Handshake jsonHandshake       `json:"handshake"`
			Status    int                 `json:"status"`
			Proto     string              `json:"proto"`
			Headers   map[string][]string `json:"headers"`
			Body      string              `json:"body"`
			Error     string              `json:"error,omitempty"`
		}{jsonHandshake{hs}, resp.StatusCode, resp.Proto, resp.Header, string(body), statusErr}, "", "  ")
		fmt.Fprintf(c.stdout, "%s\n", out)
	case outFile != "":
		// As curl -i -o: the headers go where the body goes.
		if err := os.WriteFile(outFile, append(head, body...), 0o644); err != nil {
			c.errorf("write -o file: %v", err)
			return 1
		}
	default:
		// As the reference client: the body, then a newline.
		fmt.Fprintf(c.stdout, "%s%s\n", head, body)
	}
	if statusErr != "" {
		c.errorf("%s", statusErr)
		return 1
	}
	return 0
}

// headerBlock is what -i prints before the body: the status line, the
// header fields sorted by name, and an empty line.
func headerBlock(resp *http.Response) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s\n", resp.Proto, resp.Status)
	names := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		for _, v := range resp.Header[k] {
			// The server chose these bytes: no control characters reach
			// the terminal.
			fmt.Fprintf(&b, "%s: %s\n", printable(k), printable(v))
		}
	}
	b.WriteString("\n")
	return b.Bytes()
}

func (c *cli) load(ctx context.Context, cl *reqmtls.Dialer, r *Request, l Load, asJSON bool) int {
	st := Run(ctx, cl, r, l)
	if asJSON {
		out, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintf(c.stdout, "%s\n", out)
	} else {
		st.WriteText(c.stdout)
	}
	if st.Errors > 0 {
		c.errorf("%d of %d requests failed", st.Errors, st.Requests)
		return 1
	}
	return 0
}

// flagNames turns the library's field names in errors and hints into this
// program's flags.
var flagNames = strings.NewReplacer(
	"give one in CertFile and KeyFile (or GetClientCertificate)", "pass one with -cert and -key",
	"CertFile and KeyFile", "-cert and -key",
	"that the certificate in CertFile is", "that -cert is",
	"CertFile", "-cert", "KeyFile", "-key",
	"put the server's root in RootCAs", "pass the server's root with -server-cacert",
	"RootCAs", "-server-cacert",
	"raise Timeout", "raise -timeout", "Raise Timeout", "Raise -timeout",
	"the proxy's URL (Proxy, HTTPS_PROXY)", "the proxy's URL (-x, HTTPS_PROXY)",
)

// fail reports a failure and returns exit status 1: on stderr for a
// person, and with -json as an object on stdout too, with the handshake
// when one was made:
//
//	{"error": "...", "alert": "certificate_required", "hint": "..."}
//
// alert and hint are "" when there is none.
func (c *cli) fail(err error, hs ...reqmtls.Handshake) int {
	msg, alert, hint := err.Error(), "", ""
	var e *reqmtls.Error
	if errors.As(err, &e) {
		msg, alert, hint = e.Msg, e.Alert, flagNames.Replace(e.Hint)
	}
	msg = flagNames.Replace(msg)
	c.errorf("%s", msg)
	if hint != "" {
		c.hintf("%s", hint)
	}
	if c.json {
		out := struct {
			Error     string         `json:"error"`
			Alert     string         `json:"alert"`
			Hint      string         `json:"hint"`
			Handshake *jsonHandshake `json:"handshake,omitempty"`
		}{Error: msg, Alert: alert, Hint: hint}
		if len(hs) > 0 {
			out.Handshake = &jsonHandshake{hs[0]}
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintf(c.stdout, "%s\n", b)
	}
	return 1
}

func (c *cli) printHandshake(h reqmtls.Handshake) {
	w := c.stderr
	fmt.Fprintf(w, "* TLS %s, %s, ALPN %q, handshake %.2fms\n", strings.TrimPrefix(h.Version, "TLS "), h.CipherSuite, h.ALPN, float64(h.Duration)/1e6)
	if h.FlagsSent.IsEmpty() {
		fmt.Fprintf(w, "* TLS flags sent: none\n")
	} else {
		fmt.Fprintf(w, "* TLS flags sent: %v (extension %s)\n", h.FlagsSent, codepointName(h.Codepoint))
	}
	if h.CertRequested {
		fmt.Fprintf(w, "* CertificateRequest received, CA names: %s\n", strings.Join(nonEmpty(h.RequestedCAs), "; "))
	} else {
		fmt.Fprintf(w, "* no CertificateRequest\n")
	}
	switch {
	case h.CertSent && h.IssuerListed != nil && !*h.IssuerListed:
		fmt.Fprintf(w, "* client certificate sent (its issuer is not among the CA names; sent anyway, as the server asked)\n")
	case h.CertSent:
		fmt.Fprintf(w, "* client certificate sent\n")
	case h.CertRequested:
		fmt.Fprintf(w, "* no client certificate to send\n")
	default:
		fmt.Fprintf(w, "* client certificate not sent\n")
	}
	fmt.Fprintf(w, "* session resumed: %t\n", h.Resumed)
	fmt.Fprintf(w, "* connected to %s, SNI %q\n", h.Addr, h.ServerName)
	if sc := h.ServerCert; sc != nil {
		fmt.Fprintf(w, "* server certificate: %s\n", sc.Subject)
		fmt.Fprintf(w, "*   issuer: %s\n", sc.Issuer)
		fmt.Fprintf(w, "*   names: %s\n", strings.Join(nonEmpty(sc.SANs), ", "))
		fmt.Fprintf(w, "*   not after: %s\n", sc.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintf(w, "*   sha256: %s\n", sc.SHA256)
		if h.Verified {
			fmt.Fprintf(w, "*   verified: yes\n")
		} else {
			fmt.Fprintf(w, "*   verified: NO (-k)\n")
		}
	}
}

// printable escapes what a terminal would act on (control characters,
// invalid UTF-8) as Go escapes, leaving the rest as it is.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteString(s[i : i+n])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

func nonEmpty(s []string) []string {
	if len(s) == 0 {
		return []string{"(none)"}
	}
	return s
}

func codepointName(cp uint16) string { return fmt.Sprintf("0x%04x", cp) }

// jsonHandshake is how -json prints a handshake: the codepoint as hex.
type jsonHandshake struct{ reqmtls.Handshake }

func (h jsonHandshake) MarshalJSON() ([]byte, error) {
	type plain reqmtls.Handshake
	out := struct {
		plain
		Codepoint string `json:"tls_flags_codepoint,omitempty"`
	}{plain: plain(h.Handshake)}
	if h.Codepoint != 0 {
		out.Codepoint = codepointName(h.Codepoint)
	}
	return json.Marshal(out)
}
