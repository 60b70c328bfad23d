package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// nginxEcho is an nginx origin that answers every request with the
// identity fields it received, one per line. underscores_in_headers on
// makes it read Client_Cert as Client-Cert, as CGI, WSGI and PHP origins
// do, so that a spoofed spelling the gateway let through would show.
const nginxEcho = `worker_processes 1;
daemon off;
pid {{dir}}/nginx.pid;
error_log {{dir}}/error.log;
events { worker_connections 64; }
http {
	access_log off;
	client_body_temp_path {{dir}}/body;
	proxy_temp_path {{dir}}/proxy;
	fastcgi_temp_path {{dir}}/fastcgi;
	uwsgi_temp_path {{dir}}/uwsgi;
	scgi_temp_path {{dir}}/scgi;
	underscores_in_headers on;
	server {
		listen {{addr}};
		location / {
			default_type text/plain;
			return 200 "client-cert=$http_client_cert
client-cert-chain=$http_client_cert_chain
flags=$http_req_mtls_flags
requested=$http_req_mtls_cert_requested
status=$http_req_mtls_cert_status
sha256=$http_req_mtls_cert_sha256
store=$http_req_mtls_cert_store
resumed=$http_req_mtls_resumed
xfcc=$http_x_forwarded_client_cert
forwarded=$http_forwarded
xff=$http_x_forwarded_for
xfp=$http_x_forwarded_proto
xfh=$http_x_forwarded_host
";
		}
	}
}
`

// startNginx runs nginx as the echo origin on a free loopback port.
func startNginx(t *testing.T) (addr string, stop func()) {
	t.Helper()
	nginx := needPeer(t, "nginx")
	dir := t.TempDir()
	addr = freeAddr(t)
	conf := strings.NewReplacer("{{dir}}", dir, "{{addr}}", addr).Replace(nginxEcho)
	if os.Geteuid() == 0 {
		conf = "user root;\n" + conf
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	out, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	waitListening(t, addr, func() string { b, _ := os.ReadFile(filepath.Join(dir, "error.log")); return string(b) })
	return addr, stop
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitListening(t *testing.T, addr string, diag func() string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("nothing listens on %s:\n%s", addr, diag())
}

// startGateway runs the server binary with -upstream; its access log goes
// to a file, whose name it returns with the address.
func startGateway(t *testing.T, p pki, upstream string, args ...string) (addr, accessLog string) {
	t.Helper()
	accessLog = filepath.Join(t.TempDir(), "access.log")
	return startServer(t, p, nil, append([]string{"-upstream", upstream, "-access-log", accessLog}, args...)...), accessLog
}

// echoed parses the origin's answer into its fields.
func echoed(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	if _, ok := m["status"]; !ok {
		t.Fatalf("not the origin's answer:\n%s", out)
	}
	return m
}

func derBase64(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if _, err := x509.ParseCertificate(b.Bytes); err != nil {
		t.Fatal(err)
	}
	return ":" + base64.StdEncoding.EncodeToString(b.Bytes) + ":"
}

// TestGatewayNginx: the gateway in front of nginx, as an origin that
// echoes the identity fields: each kind of client, every spelling of a
// spoofed field over HTTP/1.1 and HTTP/2, the access log, and the origin
// going away.
func TestGatewayNginx(t *testing.T) {
	curl := needPeer(t, "curl")
	p, other := newPKI(t), newPKI(t)
	origin, stopOrigin := startNginx(t)
	gw, accessLog := startGateway(t, p, "http://"+origin)
	url := "https://" + gw + "/some/path?q=1"
	valid := []string{"-server-cacert", p.f("rootCA.crt"), "-connect", url}

	type want struct{ clientCert, flags, requested, status, store string }
	leaf := derBase64(t, p.f("client.crt"))
	var validSHA string // Req-Mtls-Cert-Sha256 of the valid case, as the access log must write it too
	for _, tc := range []struct {
		name string
		args []string
		want want
	}{
		{"FlagSent_ValidCert", append([]string{"-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key")}, valid...),
			want{leaf, "80", "?1", "valid", "client"}},
		{"FlagSent_InvalidCert", append([]string{"-tlsflags", "80", "-cert", other.f("client.crt"), "-key", other.f("client.key")}, valid...),
			want{"", "80", "?1", `invalid;reason="x509: certificate signed by unknown authority`, "client"}},
		{"FlagSent_NoCert", append([]string{"-tlsflags", "80"}, valid...), want{"", "80", "?1", "none", ""}},
		{"NoFlag", valid, want{"", "", "?0", "none", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := client(t, nil, tc.args...)
			m := echoed(t, out)
			if m["client-cert"] != tc.want.clientCert || m["flags"] != tc.want.flags || m["requested"] != tc.want.requested ||
				!strings.HasPrefix(m["status"], tc.want.status) || m["store"] != tc.want.store || m["resumed"] != "?0" {
				t.Errorf("origin saw:\n%s\nwant %+v", out, tc.want)
			}
			if (m["sha256"] != "") != (tc.want.store != "") {
				t.Errorf("sha256 %q for %s", m["sha256"], tc.name)
			}
			if tc.want.status == "valid" {
				validSHA = m["sha256"]
			}
			if m["client-cert-chain"] != "" || m["xfcc"] != "" {
				t.Errorf("chain %q, xfcc %q: want none (no intermediates, -xfcc not given)", m["client-cert-chain"], m["xfcc"])
			}
			if !regexp.MustCompile(`^for="127\.0\.0\.1:\d+";proto=https;host="127\.0\.0\.1:\d+"$`).MatchString(m["forwarded"]) ||
				m["xff"] != "127.0.0.1" || m["xfp"] != "https" || m["xfh"] != gw {
				t.Errorf("forwarding fields: forwarded %q xff %q xfp %q xfh %q", m["forwarded"], m["xff"], m["xfp"], m["xfh"])
			}
			t.Logf("%s: origin saw client-cert=%.24s... flags=%s requested=%s status=%.60s store=%s", tc.name, m["client-cert"], m["flags"], m["requested"], m["status"], m["store"])
		})
	}

	// -xfcc adds Envoy's field for a validated certificate.
	xgw, _ := startGateway(t, p, "http://"+origin, "-xfcc")
	m := echoed(t, client(t, nil, "-tlsflags", "80", "-cert", p.f("client.crt"), "-key", p.f("client.key"), "-server-cacert", p.f("rootCA.crt"), "-connect", "https://"+xgw+"/"))
	if !regexp.MustCompile(`^Hash=[0-9a-f]{64};Cert="-----BEGIN%20CERTIFICATE-----%0A.*";Chain=".*";Subject="CN=client.example";DNS=client.example$`).MatchString(m["xfcc"]) {
		t.Errorf("x-forwarded-client-cert: %q", m["xfcc"])
	}
	t.Logf("-xfcc: %.90s...", m["xfcc"])

	// Spoofing: every spelling of every identity field, sent by curl
	// over HTTP/1.1 and HTTP/2, must be gone before the origin.
	spellings := []string{
		"Client-Cert", "client-cert", "CLIENT-CERT", "Client_Cert", "client_cert", "CLIENT_CERT",
		"Client-Cert-Chain", "Client_Cert_Chain",
		"X-Forwarded-Client-Cert", "x_forwarded_client_cert",
		"Req-Mtls-Cert-Status", "req_mtls_cert_status", "Req-Mtls-Flags", "Req_Mtls_Cert_Requested",
		"Forwarded", "X-Forwarded-For", "x_forwarded_for", "X-Forwarded-Proto", "X_Forwarded_Host",
	}
	for _, proto := range []string{"--http1.1", "--http2"} {
		for _, name := range spellings {
			out := run(t, nil, curl, "-sS", proto, "--cacert", p.f("rootCA.crt"), "-H", name+": spoofed", url)
			m := echoed(t, out)
			if strings.Contains(out, "spoofed") || m["status"] != "none" || m["client-cert"] != "" || m["xff"] != "127.0.0.1" {
				t.Errorf("curl %s -H '%s: spoofed': the origin saw it:\n%s", proto, name, out)
			}
		}
	}
	t.Logf("spoofing: %d spellings x HTTP/1.1 and HTTP/2 sent by curl, none reached nginx", len(spellings))

	// The access log has a line per request, with the decision.
	b := waitFileContains(t, accessLog, "cert=valid")
	var line string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "cert=valid") {
			line = l
			break
		}
	}
	for _, want := range []string{"msg=request", "client=127.0.0.1:", "tls_flags=[80]", "cert_requested=true", "resumed=false",
		`cert_subject="CN=client.example"`, "cert_san=client.example", `cert_sha256="` + validSHA + `"`, "method=GET", "path=\"/some/path?q=1\"",
		"status=200", "bytes=", "duration=", "upstream_time="} {
		if !strings.Contains(line, want) {
			t.Errorf("access log line lacks %s:\n%s", want, line)
		}
	}
	t.Logf("access log: %s", line)

	// The origin stops: a 502 at once, logged, nothing hangs.
	stopOrigin()
	start := time.Now()
	out, err := runErr(nil, filepath.Join(binDir, "client"), valid...)
	if err == nil || !strings.Contains(out, "502") {
		t.Errorf("origin down: %v\n%s", err, out)
	}
	t.Logf("origin stopped: %s in %v", strings.TrimSpace(strings.Split(out, "\n")[len(strings.Split(strings.TrimSpace(out), "\n"))-1]), time.Since(start).Round(time.Millisecond))
}

// TestGatewayWebSocket: a WebSocket through the gateway to an origin.
func TestGatewayWebSocket(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := &http.Server{Handler: websocket.Handler(func(ws *websocket.Conn) {
		var msg string
		for websocket.Message.Receive(ws, &msg) == nil {
			websocket.Message.Send(ws, "echo: "+msg+" (client-cert "+fmt.Sprint(ws.Request().Header.Get("Client-Cert") != "")+")")
		}
	})}
	go origin.Serve(ln)
	defer origin.Close()
	gw, _ := startGateway(t, p, "http://"+ln.Addr().String())

	pool := x509.NewCertPool()
	data, _ := os.ReadFile(p.f("rootCA.crt"))
	pool.AppendCertsFromPEM(data)
	cfg, err := websocket.NewConfig("wss://"+gw+"/ws", "https://"+gw)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TlsConfig = tlsConfig(pool)
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("WebSocket through the gateway: %v", err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(20 * time.Second))
	for _, msg := range []string{"hello", "again"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if want := "echo: " + msg + " (client-cert false)"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	t.Logf("WebSocket through the gateway: two messages echoed")
}

func tlsConfig(pool *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}}
}

// TestGatewayLimits: a slow origin gets a 504, a request body over the
// limit a 413, an origin on a Unix socket is reached, all through the
// server binary.
func TestGatewayLimits(t *testing.T) {
	p := newPKI(t)
	sock := filepath.Join(t.TempDir(), "origin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		fmt.Fprintf(w, "origin over a unix socket: %s %s", r.Method, r.URL.Path)
	})}
	go origin.Serve(ln)
	defer origin.Close()
	defer close(release)
	gw, _ := startGateway(t, p, "unix:"+sock, "-upstream-timeout", "300ms", "-max-request-body", "1KiB")
	base := []string{"-server-cacert", p.f("rootCA.crt")}

	if out := client(t, nil, append(base, "-connect", "https://"+gw+"/fast")...); !strings.Contains(out, "origin over a unix socket: GET /fast") {
		t.Errorf("unix socket origin: %s", out)
	}
	out, err := runErr(nil, filepath.Join(binDir, "client"), append(base, "-connect", "https://"+gw+"/slow")...)
	if err == nil || !strings.Contains(out, "504") {
		t.Errorf("slow origin: %v\n%s", err, out)
	}
	out, err = runErr(nil, filepath.Join(binDir, "client"), append(base, "-d", strings.Repeat("x", 2048), "-connect", "https://"+gw+"/upload")...)
	if err == nil || !strings.Contains(out, "413") {
		t.Errorf("request body over the limit: %v\n%s", err, out)
	}
	if out := client(t, nil, append(base, "-d", "small", "-connect", "https://"+gw+"/upload")...); !strings.Contains(out, "POST /upload") {
		t.Errorf("small body: %s", out)
	}
	t.Logf("gateway: unix socket origin reached; slow origin 504 after -upstream-timeout; body over -max-request-body 413")
}

// TestGatewayOriginMTLS: toward an https origin that requires a client
// certificate, the gateway presents -upstream-cert and checks the origin
// against -upstream-cacert.
func TestGatewayOriginMTLS(t *testing.T) {
	p := newPKI(t)
	pool := x509.NewCertPool()
	data, _ := os.ReadFile(p.f("rootCA.crt"))
	pool.AppendCertsFromPEM(data)
	cert, err := tls.LoadX509KeyPair(p.f("server.crt"), p.f("server.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "origin saw the gateway as %s over %s", r.TLS.PeerCertificates[0].DNSNames[0], r.Proto)
	})}
	go origin.Serve(ln)
	defer origin.Close()
	up := "https://" + ln.Addr().String()
	gw, _ := startGateway(t, p, up, "-upstream-cert", p.f("client.crt"), "-upstream-key", p.f("client.key"), "-upstream-cacert", p.f("rootCA.crt"))
	out := client(t, nil, "-server-cacert", p.f("rootCA.crt"), "-connect", "https://"+gw+"/")
	if !strings.Contains(out, "origin saw the gateway as client.example") {
		t.Errorf("mTLS to the origin: %s", out)
	}
	// Without the client certificate the origin refuses the gateway: 502.
	bare, _ := startGateway(t, p, up, "-upstream-cacert", p.f("rootCA.crt"))
	if out, err := runErr(nil, filepath.Join(binDir, "client"), "-server-cacert", p.f("rootCA.crt"), "-connect", "https://"+bare+"/"); err == nil || !strings.Contains(out, "502") {
		t.Errorf("origin requiring a certificate, gateway without one: %v\n%s", err, out)
	}
	t.Logf("gateway to an https origin: mTLS with -upstream-cert, 502 without")
}

// waitFileContains returns file's contents once they hold s, or after 5 s
// (the server writes its access log in batches, every 100 ms).
func waitFileContains(t *testing.T, file, s string) []byte {
	t.Helper()
	var b []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b, _ = os.ReadFile(file); strings.Contains(string(b), s) {
			break
		}
	}
	return b
}
