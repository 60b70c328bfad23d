package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/logbuf"
)

// proxyOpts are the flags of -listen.
type proxyOpts struct {
	listen, caDir, authFile, flagHosts string
	// allow is -allow-destinations.
	allow string
	// grace is -shutdown-timeout, idle -idle-timeout.
	grace, idle time.Duration
	// maxTunnels is -max-tunnels.
	maxTunnels int
}

// serveProxy runs the forward proxy on o.listen until ctx ends.
func (c *cli) serveProxy(ctx context.Context, cfg reqmtls.ClientConfig, o proxyOpts) int {
	host, _, err := net.SplitHostPort(o.listen)
	if err != nil {
		return c.misuse("-listen %q: want HOST:PORT (127.0.0.1:8080)", o.listen)
	}
	loopback := host == "localhost"
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		loopback = true
	}
	if !loopback && o.authFile == "" {
		return c.misuse("-listen %s is not a loopback address: anyone who reaches it could send requests as this bot; give -proxy-auth FILE (user:password lines), or listen on 127.0.0.1", o.listen)
	}
	// The access log is buffered: a write per line costs a system call
	// per request. It is written 100 ms after the first line it holds,
	// and at exit.
	logw := logbuf.New(c.stderr, 100*time.Millisecond)
	defer logw.Close()
	pc := reqmtls.ForwardProxyConfig{Client: cfg, CADir: o.caDir, IdleTimeout: o.idle, MaxTunnels: o.maxTunnels,
		Logger: slog.New(slog.NewTextHandler(logw, nil))}
	if o.flagHosts != "" {
		pc.FlagHosts = strings.Split(o.flagHosts, ",")
	}
	if pc.AllowDestinations, err = parsePrefixes(o.allow); err != nil {
		return c.misuse("-allow-destinations: %v", err)
	}
	// SIGHUP reads the -proxy-auth file again; it never ends the
	// process, as it would by default.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// ctx also ends the goroutines below when the proxy fails to start.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.authFile != "" {
		creds, err := loadCredentials(o.authFile, pc.Logger)
		if err != nil {
			return c.fail(err)
		}
		pc.Auth = creds.check
		go creds.watch(ctx, hup)
	} else {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					pc.Logger.Info("SIGHUP: no -proxy-auth file to read again")
				}
			}
		}()
	}
	// Listening first: a proxy that cannot listen makes no root.
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return c.fail(fmt.Errorf("-listen: %w", err))
	}
	defer ln.Close()
	p, err := reqmtls.NewForwardProxy(pc)
	if err != nil {
		return c.fail(err)
	}
	root, made := p.RootFile()
	state := "loaded"
	if made {
		state = "made now"
	}
	fmt.Fprintf(c.stderr, "client: forward proxy listening on %s\n", ln.Addr())
	fmt.Fprintf(c.stderr, "client: root %s (%s): trust it in your clients (curl --cacert, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS)\n", root, state)
	fmt.Fprintf(c.stderr, "client: root SPKI sha256 %s (Chromium: --ignore-certificate-errors-spki-list=%s)\n", p.RootSPKIHash(), p.RootSPKIHash())
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: o.idle}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return c.fail(err)
	case <-ctx.Done():
	}
	// As the server: requests in flight finish, within the grace period,
	// and their lines are logged before the process exits.
	pc.Logger.Info("shutting down", "grace", o.grace.String())
	sctx, cancel := context.WithTimeout(context.Background(), o.grace)
	defer cancel()
	// The tunnels are hijacked connections, which srv no longer sees: p
	// drains them.
	tunnels := make(chan error, 1)
	go func() { tunnels <- p.Shutdown(sctx) }()
	err = srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
	}
	if err = errors.Join(err, <-tunnels); err != nil {
		pc.Logger.Warn("shutdown cut requests short", "err", err)
	}
	<-errc
	pc.Logger.Info("stopped")
	return 0
}

// parsePrefixes reads a comma-separated list of CIDR prefixes and
// addresses (an address is a prefix of its full length).
func parsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	if list == "" {
		return nil, nil
	}
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		} else {
			return nil, fmt.Errorf("%q is not a CIDR prefix (127.0.0.0/8, ::1/128) or an IP address", s)
		}
	}
	return out, nil
}

// credentials are the -proxy-auth file's users and passwords, reloaded as
// the server reloads its certificates: read fully, checked, swapped at
// once; a bad file keeps the last good ones; both outcomes logged.
type credentials struct {
	file  string
	log   *slog.Logger
	users atomic.Pointer[map[string]string]
	// sum is the SHA-256 of the contents last loaded or tried.
	sum [sha256.Size]byte
}

// loadCredentials reads file, which must hold credentials.
func loadCredentials(file string, log *slog.Logger) (*credentials, error) {
	c := &credentials{file: file, log: log}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("-proxy-auth: %w", err)
	}
	users, err := parseCredentials(file, data)
	if err != nil {
		return nil, err
	}
	c.users.Store(&users)
	c.sum = sha256.Sum256(data)
	return c, nil
}

func (c *credentials) check(user, pass string) bool {
	want, ok := (*c.users.Load())[user]
	return ok && subtle.ConstantTimeCompare([]byte(want), []byte(pass)) == 1
}

// watch reloads the file at each signal on hup, and when its contents
// change (compared every second: the file is small, and a comparison sees
// an edit in place, a rename over it and a symlink swapped alike), until
// ctx ends.
func (c *credentials) watch(ctx context.Context, hup <-chan os.Signal) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			c.reload("SIGHUP", true)
		case <-tick.C:
			c.reload("file change", false)
		}
	}
}

// reload reads the file and takes its credentials if they are good; without
// force, only when its contents differ from the last ones loaded or tried.
func (c *credentials) reload(trigger string, force bool) {
	data, err := os.ReadFile(c.file)
	if err != nil {
		if force {
			c.log.Error("reload failed; keeping the last good credentials", "trigger", trigger, "err", fmt.Errorf("-proxy-auth: %w", err))
		}
		return // a file being replaced may be missing for a moment
	}
	sum := sha256.Sum256(data)
	if !force && sum == c.sum {
		return
	}
	c.sum = sum
	users, err := parseCredentials(c.file, data)
	if err != nil {
		c.log.Error("reload failed; keeping the last good credentials", "trigger", trigger, "err", err)
		return
	}
	c.users.Store(&users)
	c.log.Info("proxy credentials reloaded", "trigger", trigger, "users", len(users))
}

// parseCredentials reads user:password lines (# comments) of file.
func parseCredentials(file string, data []byte) (map[string]string, error) {
	creds := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		user, pass, ok := strings.Cut(l, ":")
		if !ok || user == "" || pass == "" {
			return nil, fmt.Errorf("-proxy-auth %q: line %d: want user:password", file, n)
		}
		creds[user] = pass
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("-proxy-auth %q: %w", file, err)
	}
	if len(creds) == 0 {
		return nil, fmt.Errorf("-proxy-auth %q: no user:password line", file)
	}
	return creds, nil
}
