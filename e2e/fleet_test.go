package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testutil"
)

// instance is one server process of a fleet.
type instance struct {
	addr, admin, accessLog string
	cmd                    *exec.Cmd
	log                    testutil.Buffer // its stderr
}

var adminListening = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)

// startInstance runs the server binary with an admin address, PROXY
// protocol from loopback, an access log, and args.
func startInstance(t *testing.T, p pki, args ...string) *instance {
	t.Helper()
	accessLog := filepath.Join(t.TempDir(), "access.log")
	return startInstanceWith(t, accessLog, append([]string{"-cert", p.f("server.crt"), "-key", p.f("server.key"), "-client-cacert", p.f("rootCA.crt"),
		"-listen-addr", "127.0.0.1:0", "-admin-addr", "127.0.0.1:0", "-proxy-protocol-from", "127.0.0.0/8",
		"-access-log", accessLog, "-drain-delay", "1s"}, args...)...)
}

// startInstanceWith runs the server binary with args alone (which must
// give an admin address and the access log accessLog).
func startInstanceWith(t *testing.T, accessLog string, args ...string) *instance {
	t.Helper()
	in := &instance{accessLog: accessLog}
	in.cmd = exec.Command(filepath.Join(binDir, "server"), args...)
	stderr, err := in.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.cmd.Process.Kill(); in.cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			in.log.Write([]byte(line + "\n"))
			if m := adminListening.FindStringSubmatch(line); m != nil {
				in.admin = m[1]
			}
			if m := listening.FindStringSubmatch(line); m != nil && in.addr == "" {
				in.addr = m[1]
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	return in
}

const haproxyConf = `global
	maxconn 256
defaults
	mode tcp
	timeout connect 2s
	timeout client 30s
	timeout server 30s
	timeout check 2s
	retries 3
	option redispatch
frontend fe
	bind {{addr}}
	default_backend be
backend be
	balance roundrobin
	option httpchk GET /readyz
	http-check expect status 200
{{servers}}`

// startHAProxy runs HAProxy in TCP mode in front of the instances, with
// send-proxy-v2, round robin, and health checks on each one's /readyz.
func startHAProxy(t *testing.T, ins []*instance) string {
	t.Helper()
	haproxy := needPeer(t, "haproxy")
	dir := t.TempDir()
	addr := freeAddr(t)
	var servers strings.Builder
	for i, in := range ins {
		_, adminPort, _ := net.SplitHostPort(in.admin)
		fmt.Fprintf(&servers, "\tserver s%d %s send-proxy-v2 check port %s inter 200ms fall 2 rise 1\n", i+1, in.addr, adminPort)
	}
	conf := strings.NewReplacer("{{addr}}", addr, "{{servers}}", servers.String()).Replace(haproxyConf)
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(haproxy, "-f", cfgFile, "-db")
	logf, _ := os.Create(filepath.Join(dir, "haproxy.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitListening(t, addr, func() string { b, _ := os.ReadFile(filepath.Join(dir, "haproxy.log")); return string(b) })
	return addr
}

var loadLine = regexp.MustCompile(`requests:\s+(\d+) in .*, (\d+) ok, (\d+) errors\nconnections: (\d+) new, (\d+) resumed`)

// load runs `client -n N -c 4 -resume` flagged with a certificate against
// addr and returns requests, errors, connections and resumed.
func load(t *testing.T, p pki, addr string, n int) (requests, errors, conns, resumed int, out string) {
	t.Helper()
	out, _ = runErr(nil, filepath.Join(binDir, "client"), "-n", strconv.Itoa(n), "-c", "4", "-resume", "-tlsflags", "80",
		"-cert", p.f("client.crt"), "-key", p.f("client.key"), "-server-cacert", p.f("rootCA.crt"), "-connect", "https://localhost:"+port(addr)+"/debug")
	m := loadLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("client -n output:\n%s", out)
	}
	atoi := func(s string) int { v, _ := strconv.Atoi(s); return v }
	return atoi(m[1]), atoi(m[3]), atoi(m[4]), atoi(m[5]), out
}

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

// TestFleetHAProxy: three instances behind HAProxy (TCP mode,
// send-proxy-v2, round robin, health checks), sharing ticket keys; a real
// Prometheus scrapes them.
func TestFleetHAProxy(t *testing.T) {
	prometheus := needPeer(t, "prometheus")
	promtool := needPeer(t, "promtool")
	p := newPKI(t)
	keyBytes := make([]byte, 32)
	rand.Read(keyBytes)
	keys := filepath.Join(t.TempDir(), "ticket.keys")
	os.WriteFile(keys, []byte("# shared by the fleet\n"+base64.StdEncoding.EncodeToString(keyBytes)+"\n"), 0o600)
	var fleet []*instance
	for range 3 {
		fleet = append(fleet, startInstance(t, p, "-ticket-keys", keys))
	}
	lb := startHAProxy(t, fleet)
	handshakes := 0

	// A flagged client through HAProxy is asked and validated.
	out := client(t, nil, "-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key"), "-server-cacert", p.f("rootCA.crt"), "-connect", "https://localhost:"+port(lb)+"/debug")
	handshakes++
	if !strings.Contains(out, "Client cert requested: true\nPeer certificate received: true\nCert received: client.example\nCert validated: true") {
		t.Fatalf("flagged client through HAProxy:\n%s", out)
	}
	t.Logf("flagged client through HAProxy: certificate requested and validated")

	// The client address the instances see is the client's, from the
	// PROXY header: the client dials from 127.0.0.5, HAProxy from
	// 127.0.0.1.
	pool := x509.NewCertPool()
	data, _ := os.ReadFile(p.f("rootCA.crt"))
	pool.AppendCertsFromPEM(data)
	hc := &http.Client{Transport: &http.Transport{
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}).DialContext,
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"},
	}, Timeout: 20 * time.Second}
	resp, err := hc.Get("https://" + lb + "/debug?format=json")
	if err != nil {
		t.Fatal(err)
	}
	handshakes++
	var rep struct {
		ClientAddr string `json:"client_address"`
	}
	json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if !strings.HasPrefix(rep.ClientAddr, "127.0.0.5:") {
		t.Errorf("/debug client_address %q, want the client's 127.0.0.5", rep.ClientAddr)
	}
	// The access log is written in batches, every 100 ms.
	found := ""
	for deadline := time.Now().Add(5 * time.Second); found == "" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, in := range fleet {
			b, _ := os.ReadFile(in.accessLog)
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "client="+rep.ClientAddr) {
					found = l
				}
			}
		}
	}
	if found == "" {
		t.Errorf("no access log line with client=%s", rep.ClientAddr)
	}
	t.Logf("access log through HAProxy: %s", found)

	// Resumption across instances with shared keys.
	n, errs, conns, resumed, _ := load(t, p, lb, 300)
	handshakes += conns
	rate := float64(resumed) / float64(conns)
	t.Logf("shared ticket keys: %d requests, %d errors, %d connections, %d resumed (%.1f%%)", n, errs, conns, resumed, 100*rate)
	if errs != 0 || rate < 0.95 {
		t.Errorf("with shared keys: %d errors, resumption %.1f%%, want 0 and at least 95%%", errs, 100*rate)
	}

	// The same without shared keys, for comparison: each instance
	// decrypts only its own tickets.
	var own []*instance
	for range 3 {
		own = append(own, startInstance(t, p))
	}
	n, errs, conns, resumed, _ = load(t, p, startHAProxy(t, own), 300)
	t.Logf("without shared keys: %d requests, %d errors, %d connections, %d resumed (%.1f%%)", n, errs, conns, resumed, 100*float64(resumed)/float64(conns))
	if errs != 0 {
		t.Errorf("without shared keys: %d errors", errs)
	}

	// Prometheus scrapes the three instances: the handshake counter
	// adds up to the handshakes this test made.
	promDir := t.TempDir()
	promAddr := freeAddr(t)
	var targets []string
	for _, in := range fleet {
		targets = append(targets, `"`+in.admin+`"`)
	}
	os.WriteFile(filepath.Join(promDir, "prometheus.yml"), []byte("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: reqmtls\n    static_configs:\n      - targets: ["+strings.Join(targets, ", ")+"]\n"), 0o600)
	prom := exec.Command(prometheus, "--config.file="+filepath.Join(promDir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(promDir, "data"),
		"--web.listen-address="+promAddr)
	promLog, _ := os.Create(filepath.Join(promDir, "prometheus.log"))
	prom.Stdout, prom.Stderr = promLog, promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prom.Process.Kill(); prom.Wait() })
	query := `sum(reqmtls_handshakes_total)`
	var got float64 = -1
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && got != float64(handshakes); time.Sleep(500 * time.Millisecond) {
		got = promQuery(promAddr, query)
	}
	if got != float64(handshakes) {
		b, _ := os.ReadFile(filepath.Join(promDir, "prometheus.log"))
		t.Fatalf("Prometheus %s = %v, want the %d handshakes made\n%s", query, got, handshakes, b)
	}
	t.Logf("Prometheus: %s = %v (the test made %d handshakes)", query, got, handshakes)
	t.Logf("Prometheus: sum(reqmtls_handshakes_total{resumed=\"true\"}) = %v", promQuery(promAddr, `sum(reqmtls_handshakes_total{resumed="true"})`))

	// promtool accepts the exposition.
	resp, err = http.Get("http://" + fleet[0].admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	exposition, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(string(exposition))
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	t.Logf("promtool check metrics: ok (%d lines)", strings.Count(string(exposition), "\n"))

	// One instance stopped mid-run (SIGTERM: /readyz fails, HAProxy
	// takes it out, then it stops): no request fails.
	done := make(chan string, 1)
	go func() {
		n, errs, conns, resumed, _ := load(t, p, lb, 600)
		done <- fmt.Sprintf("%d requests, %d errors, %d connections, %d resumed", n, errs, conns, resumed)
		if errs != 0 {
			t.Errorf("instance stopped mid-run: %d of %d requests failed", errs, n)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	fleet[1].cmd.Process.Signal(syscall.SIGTERM)
	t.Logf("instance stopped mid-run: %s", <-done)

	// Killed outright instead (SIGKILL): new connections to it are
	// refused and HAProxy redispatches them, but a request in flight on
	// it is lost with its TCP connection. Reported, not asserted.
	go func() {
		n, errs, conns, _, _ := load(t, p, lb, 600)
		done <- fmt.Sprintf("%d requests, %d errors, %d connections", n, errs, conns)
	}()
	time.Sleep(300 * time.Millisecond)
	fleet[2].cmd.Process.Kill()
	t.Logf("instance killed (SIGKILL) mid-run: %s", <-done)
}

// promQuery returns the value of an instant query, or -1.
func promQuery(addr, q string) float64 {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&r) != nil || len(r.Data.Result) == 0 {
		return -1
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return v
}

// indentedBlock returns the indented code block of md whose first line,
// trimmed, starts with first, as lines without their indent.
func indentedBlock(t *testing.T, md, first string) []string {
	t.Helper()
	lines := strings.Split(md, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "    ") || !strings.HasPrefix(strings.TrimSpace(l), first) || i == 0 || strings.TrimSpace(lines[i-1]) != "" {
			continue
		}
		var block []string
		for ; i < len(lines) && (strings.HasPrefix(lines[i], "    ") || strings.TrimSpace(lines[i]) == ""); i++ {
			block = append(block, strings.TrimPrefix(lines[i], "    "))
		}
		for len(block) > 0 && strings.TrimSpace(block[len(block)-1]) == "" {
			block = block[:len(block)-1]
		}
		return block
	}
	t.Fatalf("docs/fleet.md has no indented block starting with %q", first)
	return nil
}

var (
	docDrainDelay = regexp.MustCompile(`-drain-delay[ ,"]+(\d+)s\b`)
	docAdminAddr  = regexp.MustCompile(`-admin-addr[ ,"]+([^\s,"\]]+)`)
	docCheckInter = regexp.MustCompile(`\binter (\d+)s\b`)
	docCheckFall  = regexp.MustCompile(`\bfall (\d+)\b`)
)

// TestFleetDocs runs docs/fleet.md as it is written: its instance command
// three times, for instances a, b and c, and its HAProxy configuration in
// front of them. The page's addresses become loopback ones, each instance
// its own (10.0.0.11 is 127.X.Y.11, and so on, in a /16 of loopback drawn
// at random), the balancer's 10.0.0.2 becomes 127.0.0.1 (where HAProxy's
// connections to loopback come from), and the frontend binds a free port;
// nothing else changes. Every server must pass HAProxy's health check at
// the page's admin address, a client is served through it, and an
// instance sent SIGTERM is taken out by failed checks while it still
// answers them, as the page's rule for the drain delay says. The rule is
// also checked on every command of the page.
func TestFleetDocs(t *testing.T) {
	haproxy := needPeer(t, "haproxy")
	data, err := os.ReadFile("../docs/fleet.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	cmdBlock := indentedBlock(t, md, "openssl rand")
	conf := strings.Join(indentedBlock(t, md, "defaults"), "\n") + "\n"

	// The rule: the drain delay is longer than inter times fall (the
	// page's server lines; HAProxy's fall is 3 when unsaid).
	var window int
	for _, line := range strings.Split(conf, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "server ") {
			continue
		}
		m := docCheckInter.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("docs/fleet.md: a server line without inter: %s", line)
		}
		inter, _ := strconv.Atoi(m[1])
		fall := 3
		if m := docCheckFall.FindStringSubmatch(line); m != nil {
			fall, _ = strconv.Atoi(m[1])
		}
		window = max(window, inter*fall)
	}
	delays := docDrainDelay.FindAllStringSubmatch(md, -1)
	if window == 0 || len(delays) < 3 {
		t.Fatalf("docs/fleet.md: %d HAProxy check window, %d -drain-delay values found", window, len(delays))
	}
	for _, m := range delays {
		if d, _ := strconv.Atoi(m[1]); d <= window {
			t.Errorf("docs/fleet.md: %q is not longer than the page's inter times fall, %d s", m[0], window)
		}
	}
	// The admin port serves the balancer's checks and Prometheus, so it
	// listens where they reach it, never on loopback alone.
	for _, m := range docAdminAddr.FindAllStringSubmatch(md, -1) {
		if host, _, _ := net.SplitHostPort(m[1]); strings.HasPrefix(host, "127.") || host == "localhost" || host == "::1" {
			t.Errorf("docs/fleet.md: %q: the balancer's health checks cannot reach a loopback admin address", m[0])
		}
	}

	// The page, run.
	prefix := fmt.Sprintf("127.%d.%d.", 1+mrand.IntN(250), 1+mrand.IntN(250))
	local := strings.NewReplacer("10.0.0.2 ", "127.0.0.1 ", "10.0.0.", prefix)
	p := newPKI(t)
	dir := t.TempDir()
	for from, to := range map[string]string{"server.crt": "tls.crt", "server.key": "tls.key", "rootCA.crt": "bots.pem"} {
		b, err := os.ReadFile(p.f(from))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, to), b, 0o600)
	}
	var serverLine string
	for _, line := range strings.Split(strings.ReplaceAll(strings.Join(cmdBlock, "\n"), "\\\n", " "), "\n") {
		if strings.HasPrefix(line, "bin/server ") {
			serverLine = line
			continue
		}
		sh := exec.Command("bash", "-euo", "pipefail", "-c", line)
		sh.Dir = dir
		if out, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("docs/fleet.md: %s: %v\n%s", line, err, out)
		}
	}
	if serverLine == "" {
		t.Fatal("docs/fleet.md: no bin/server command in the instance's block")
	}
	instances := map[string]*exec.Cmd{}
	exited := map[string]chan struct{}{}
	logs := map[string]*testutil.Buffer{}
	for i, name := range []string{"a", "b", "c"} {
		line := local.Replace(strings.ReplaceAll(serverLine, "10.0.0.11", fmt.Sprintf("10.0.0.%d", 11+i)))
		args := strings.Fields(strings.TrimPrefix(line, "bin/server "))
		cmd := exec.Command(filepath.Join(binDir, "server"), args...)
		cmd.Dir = dir
		logs[name] = &testutil.Buffer{}
		cmd.Stdout, cmd.Stderr = logs[name], logs[name]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		instances[name], exited[name] = cmd, done
		t.Logf("instance %s: server %s", name, strings.Join(args, " "))
	}

	lb := freeAddr(t)
	sock := filepath.Join(dir, "haproxy.sock")
	conf = local.Replace(conf)
	if !strings.Contains(conf, "bind :443\n") {
		t.Fatalf("docs/fleet.md: the frontend does not bind :443:\n%s", conf)
	}
	conf = "global\n    stats socket " + sock + " level admin\n" + strings.Replace(conf, "bind :443\n", "bind "+lb+"\n", 1)
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(cfgFile, []byte(conf), 0o600)
	hp := exec.Command(haproxy, "-f", cfgFile, "-db")
	var hpLog testutil.Buffer
	hp.Stdout, hp.Stderr = &hpLog, &hpLog
	if err := hp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hp.Process.Kill(); hp.Wait() })
	diag := func() string {
		s := "haproxy.cfg:\n" + conf + "\nhaproxy:\n" + hpLog.String()
		for _, name := range []string{"a", "b", "c"} {
			s += "\ninstance " + name + ":\n" + logs[name].String()
		}
		return s
	}
	waitListening(t, lb, diag)

	// Every server passes a real check: L7OK, from GET /readyz at the
	// address and port HAProxy checks.
	var stats map[string][2]string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		stats = haproxyStats(sock)
		if stats["a"][1] == "L7OK" && stats["b"][1] == "L7OK" && stats["c"][1] == "L7OK" {
			break
		}
	}
	for _, name := range []string{"a", "b", "c"} {
		if st := stats[name]; st[0] != "UP" || st[1] != "L7OK" {
			t.Fatalf("HAProxy server %s: %s, check %s; want UP after a passed check (L7OK)\n%s", name, st[0], st[1], diag())
		}
	}
	t.Logf("HAProxy: servers a, b, c UP, checks L7OK at %s{11,12,13}:9100", prefix)
	flagged := []string{"-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key"), "-server-cacert", p.f("rootCA.crt"),
		"-connect", "https://localhost:" + port(lb) + "/debug"}
	if out := client(t, nil, flagged...); !strings.Contains(out, "Cert validated: true") {
		t.Fatalf("flagged client through the page's HAProxy:\n%s", out)
	}

	// A drain: b is taken out by failed checks (L7STS, its /readyz
	// answering 503) while it is still running, and then stops.
	instances["b"].Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if stats = haproxyStats(sock); stats["b"][0] == "DOWN" {
			break
		}
	}
	select {
	case <-exited["b"]:
		t.Errorf("instance b stopped before HAProxy took it out: the drain delay is too short")
	default:
	}
	if st := stats["b"]; st[0] != "DOWN" || st[1] != "L7STS" {
		t.Errorf("HAProxy server b after SIGTERM: %s, check %s; want DOWN on its /readyz 503 (L7STS)\n%s", st[0], st[1], diag())
	}
	if out := client(t, nil, flagged...); !strings.Contains(out, "Cert validated: true") {
		t.Errorf("flagged client through HAProxy during b's drain:\n%s", out)
	}
	select {
	case <-exited["b"]:
	case <-time.After(60 * time.Second):
		t.Errorf("instance b did not stop after its drain")
	}
	t.Logf("drain: b out of rotation on failed checks (%s) while serving, then stopped", stats["b"][1])
}

// haproxyStats returns, by server name, the status and the last check's
// status of HAProxy's servers, read with "show stat" on its socket.
func haproxyStats(sock string) map[string][2]string {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "show stat\n")
	out, _ := io.ReadAll(c)
	lines := strings.Split(string(out), "\n")
	if len(lines) == 0 {
		return nil
	}
	cols := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	status, check := slices.Index(cols, "status"), slices.Index(cols, "check_status")
	if status < 0 || check < 0 {
		return nil
	}
	st := map[string][2]string{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) > max(status, check) && f[1] != "FRONTEND" && f[1] != "BACKEND" {
			st[f[1]] = [2]string{f[status], f[check]}
		}
	}
	return st
}
