package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The forward-proxy comparison: proxy CPU per request, ours (client
// -listen) against mitmproxy's mitmdump, both relaying https through a
// CONNECT tunnel to the same site with the same upstream client
// certificate. Two loads: many requests over one kept-alive tunnel, and a
// new tunnel (CONNECT, the client's TLS to the proxy, the proxy's TLS to the
// site) per request. Proxies pinned to -server-cpu; rounds interleaved.

type fwdProxy struct {
	name string
	p    *proc
	root *x509.CertPool // what the client trusts for the proxy's leaves
}

type fwdResult struct{ oneTunnel, newTunnel []float64 } // µs of proxy CPU per request, per round

// forwardBench runs the comparison and returns its markdown, or a note when
// mitmdump is not installed.
func forwardBench(dir, binDir string, rounds, oneN, newN int) string {
	mitm, err := exec.LookPath("mitmdump")
	if err != nil {
		return "Forward proxy comparison skipped: mitmdump not found (Debian package mitmproxy).\n"
	}
	p := makePKI(dir, "fwd", false)
	// The site asks every client (-client-auth always): mitmproxy sets no
	// flag, and must send the same certificate for the loads to compare.
	site, err := startListening(false, filepath.Join(binDir, "server"), "-cert", p.serverCert, "-key", p.serverKey,
		"-client-cacert", p.rootCA, "-client-auth", "always", "-listen-addr", "127.0.0.1:0")
	check(err)
	siteAddr := site.addr

	// Ours.
	ourAddr, err := freeAddr()
	check(err)
	caDir := filepath.Join(dir, "fwd-ca")
	ourLog := filepath.Join(dir, "fwd-ours.log")
	ours, err := startAt(ourAddr, ourLog, append(os.Environ(), "NO_PROXY=*"), 0, filepath.Join(binDir, "client"),
		"-listen", ourAddr, "-mitm-ca", caDir, "-cert", p.clientCert, "-key", p.clientKey, "-server-cacert", p.rootCA)
	check(err)
	ourRoot := poolOf(filepath.Join(caDir, "ca.crt"))

	// mitmproxy, with the same client certificate for the site.
	mitmAddr, err := freeAddr()
	check(err)
	_, mport, _ := net.SplitHostPort(mitmAddr)
	confdir := filepath.Join(dir, "mitm")
	check(os.MkdirAll(confdir, 0o700))
	pair := filepath.Join(dir, "fwd-client-pair.pem")
	cert, _ := os.ReadFile(p.clientCert)
	key, _ := os.ReadFile(p.clientKey)
	check(os.WriteFile(pair, append(cert, key...), 0o600))
	mp, err := startAt(mitmAddr, filepath.Join(dir, "mitm.log"), append(os.Environ(), "NO_PROXY=*"), 0, mitm, "-q",
		"--listen-host", "127.0.0.1", "--listen-port", mport, "--set", "confdir="+confdir,
		"--set", "client_certs="+pair, "--set", "ssl_verify_upstream_trusted_ca="+p.rootCA)
	check(err)
	mitmRoot := poolOf(filepath.Join(confdir, "mitmproxy-ca-cert.pem"))

	proxies := []*fwdProxy{{name: "ours (client -listen)", p: ours, root: ourRoot}, {name: "mitmproxy " + mitmVersion(mitm), p: mp, root: mitmRoot}}
	res := make([]fwdResult, len(proxies))
	for _, x := range proxies {
		// Warm up: leaves minted, sessions cached, code paths hot.
		check(fwdLoad(x, siteAddr, false, 20))
	}
	for r := range rounds {
		for i, x := range proxies {
			one, err := fwdCPU(x, siteAddr, false, oneN)
			check(err)
			nw, err := fwdCPU(x, siteAddr, true, newN)
			check(err)
			res[i].oneTunnel = append(res[i].oneTunnel, one)
			res[i].newTunnel = append(res[i].newTunnel, nw)
			log.Printf("forward round %d/%d: %s: %.0f µs per request on one tunnel, %.0f with a new tunnel each", r+1, rounds, x.name, one, nw)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Forward proxy: proxy CPU per https request through a CONNECT tunnel, %d interleaved rounds (%d requests over one kept-alive tunnel, %d with a new tunnel each), proxies pinned to one core; medians.\n\n", rounds, oneN, newN)
	b.WriteString("| proxy | one tunnel, CPU per request | new tunnel per request, CPU per request |\n|---|---|---|\n")
	for i, x := range proxies {
		fmt.Fprintf(&b, "| %s | %.0f µs | %.0f µs |\n", x.name, median(res[i].oneTunnel), median(res[i].newTunnel))
	}
	ratio := func(get func(fwdResult) []float64) float64 {
		var rs []float64
		for k := range get(res[0]) {
			rs = append(rs, get(res[0])[k]/get(res[1])[k])
		}
		return median(rs)
	}
	one := ratio(func(r fwdResult) []float64 { return r.oneTunnel })
	nw := ratio(func(r fwdResult) []float64 { return r.newTunnel })
	fmt.Fprintf(&b, "\nOurs ÷ mitmproxy (median of per-round ratios): one tunnel %.2f, new tunnel %.2f; goal at most 0.20 on both: %s.\n", one, nw, met(one <= 0.2 && nw <= 0.2))
	return b.String()
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func mitmVersion(bin string) string {
	out, _ := exec.Command(bin, "--version").CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Mitmproxy: "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func poolOf(file string) *x509.CertPool {
	data, err := os.ReadFile(file)
	check(err)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		fatalf("no certificate in %s", file)
	}
	return pool
}

// fwdCPU runs a load through x and returns its CPU per request in µs.
func fwdCPU(x *fwdProxy, site string, newTunnel bool, n int) (float64, error) {
	before := x.p.treeCPU()
	if err := fwdLoad(x, site, newTunnel, n); err != nil {
		return 0, err
	}
	return float64(x.p.treeCPU()-before) / float64(time.Microsecond) / float64(n), nil
}

// fwdLoad sends n GET /debug through the proxy: over one tunnel, or a new
// tunnel each.
func fwdLoad(x *fwdProxy, site string, newTunnel bool, n int) error {
	var c *tunnel
	for i := range n {
		if c == nil || newTunnel {
			if c != nil {
				c.close()
			}
			var err error
			if c, err = openTunnel(x, site); err != nil {
				return fmt.Errorf("%s: %w", x.name, err)
			}
		}
		if err := c.get(site); err != nil {
			return fmt.Errorf("%s: request %d: %w", x.name, i, err)
		}
	}
	if c != nil {
		c.close()
	}
	return nil
}

type tunnel struct {
	tc *tls.Conn
	br *bufio.Reader
}

func openTunnel(x *fwdProxy, site string) (*tunnel, error) {
	raw, err := net.Dial("tcp", x.p.addr)
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(raw, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", site, site)
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		raw.Close()
		return nil, err
	}
	if resp.StatusCode != 200 {
		raw.Close()
		return nil, fmt.Errorf("CONNECT: %s", resp.Status)
	}
	host, _, _ := net.SplitHostPort(site)
	tc := tls.Client(raw, &tls.Config{RootCAs: x.root, ServerName: host, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return &tunnel{tc: tc, br: bufio.NewReader(tc)}, nil
}

func (t *tunnel) get(site string) error {
	t.tc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(t.tc, "GET /debug HTTP/1.1\r\nHost: %s\r\n\r\n", site); err != nil {
		return err
	}
	resp, err := http.ReadResponse(t.br, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Peer certificate received: true") {
		return fmt.Errorf("status %s, body %q: the site did not get the client certificate", resp.Status, body)
	}
	return nil
}

func (t *tunnel) close() { t.tc.Close() }
