package e2e

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// startForwardProxy runs `client -listen` on a free loopback port with
// args, and returns its address and the proxy's root file. Its own
// connections to anything but loopback go to a dead loopback proxy, so
// that a browser's background requests through it never leave the
// machine.
func startForwardProxy(t *testing.T, args ...string) (addr, root string) {
	t.Helper()
	addr = freeAddr(t)
	caDir := filepath.Join(t.TempDir(), "ca")
	env := []string{"HTTPS_PROXY=http://127.0.0.1:1", "HTTP_PROXY=http://127.0.0.1:1", "NO_PROXY="}
	spki := startBinary(t, "client", env, spkiLine, append([]string{"-listen", addr, "-mitm-ca", caDir}, args...)...)
	root = filepath.Join(caDir, "ca.crt")
	if got := spkiHash(t, root); got != spki {
		t.Errorf("printed SPKI hash %s, root's %s", spki, got)
	}
	return addr, root
}

// spkiLine is the forward proxy's line that says it is ready.
var spkiLine = regexp.MustCompile(`root SPKI sha256 (\S+)`)

func spkiHash(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// nodeTunnel is a Node client behind a proxy: Node 20's fetch ignores proxy
// variables, so a CONNECT tunnel by hand, then https inside it, trusting the
// proxy's root through NODE_EXTRA_CA_CERTS.
const nodeTunnel = `const http = require('http'), https = require('https');
const [host, port] = process.env.PROXY.split(':');
const target = new URL(process.argv[2]);
http.request({host, port, method: 'CONNECT', path: target.host}).on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.error('proxy answered', res.statusCode); process.exit(1); }
  https.get({host: target.hostname, port: target.port, servername: target.hostname, path: target.pathname, socket, agent: false}, (r) => {
    let body = '';
    r.on('data', (d) => body += d);
    r.on('end', () => { process.stdout.write('status ' + r.statusCode + ' ' + r.headers['req-mtls-cert-requested'] + '\n' + body); });
  }).on('error', (e) => { console.error(e.message); process.exit(1); });
}).on('error', (e) => { console.error(e.message); process.exit(1); }).end();
`

const pythonRequests = `import os, sys, requests
r = requests.get(sys.argv[1], proxies={"https": "http://" + os.environ["PROXY"]})
print("status", r.status_code, r.headers.get("Req-Mtls-Cert-Requested"))
sys.stdout.write(r.text)
`

// TestForwardProxyClients: curl, Python's requests, Node and headless
// Chromium, none of which can set TLS flags, reach /debug through the
// forward proxy with flag 80 and the certificate; through a proxy started
// with -tlsflags "" the site asks for nothing.
func TestForwardProxyClients(t *testing.T) {
	curl := needPeer(t, "curl")
	node := needPeer(t, "node")
	chromium := needPeer(t, "chromium")
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import requests").CombinedOutput(); err != nil {
		if os.Getenv("REQ_MTLS_REQUIRE_PEERS") != "" {
			t.Fatalf("python3-requests: %v\n%s", err, out)
		}
		t.Skip("SKIP: python3-requests not installed")
	}
	p := newPKI(t)
	srv := startServer(t, p, nil)
	_, port, _ := strings.Cut(srv, ":")
	target := "https://localhost:" + port + "/debug"
	dir := t.TempDir()
	nodeJS, pyFile := filepath.Join(dir, "tunnel.js"), filepath.Join(dir, "get.py")
	os.WriteFile(nodeJS, []byte(nodeTunnel), 0o600)
	os.WriteFile(pyFile, []byte(pythonRequests), 0o600)

	for _, tc := range []struct {
		name, flags string
		want        string // the /debug tail
		requested   string // Req-Mtls-Cert-Requested
	}{
		{"Flagged", "80", "Client cert requested: true\nPeer certificate received: true\nCert received: client.example\nCert validated: true\n", "?1"},
		{"NoFlags", "", "Client cert requested: false\nPeer certificate received: false\n", "?0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy, root := startForwardProxy(t, "-tlsflags", tc.flags, "-cert", p.f("client.crt"), "-key", p.f("client.key"), "-server-cacert", p.f("rootCA.crt"))
			env := []string{"PROXY=" + proxy, "NODE_EXTRA_CA_CERTS=" + root, "REQUESTS_CA_BUNDLE=" + root}
			profile := t.TempDir()
			for _, c := range []struct {
				name string
				cmd  []string
			}{
				{"curl", []string{curl, "-sS", "-i", "--proxy", "http://" + proxy, "--cacert", root, target}},
				{"python-requests", []string{python, pyFile, target}},
				{"node", []string{node, nodeJS, target}},
				{"chromium", []string{chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
					"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir=" + profile,
					"--proxy-server=http://" + proxy, "--proxy-bypass-list=<-loopback>",
					"--ignore-certificate-errors-spki-list=" + spkiHash(t, root), "--dump-dom", target}},
			} {
				out, err := runErr(env, c.cmd[0], c.cmd[1:]...)
				if c.name == "chromium" {
					// The page is the text/plain body in a <pre>.
					if m := regexp.MustCompile(`(?s)<pre[^>]*>(.*)</pre>`).FindStringSubmatch(out); m != nil {
						out = m[1]
					}
				}
				if err != nil || !strings.Contains(out, "Client sent TLS Flags: ["+tc.flags+"]\n") || !strings.Contains(out, tc.want) {
					t.Errorf("%s through the proxy: %v\n%s", c.name, err, out)
					continue
				}
				if c.name != "chromium" && !strings.Contains(strings.ToLower(out), strings.ToLower(tc.requested)) {
					t.Errorf("%s: no Req-Mtls-Cert-Requested %s:\n%s", c.name, tc.requested, out)
				}
				t.Logf("%s saw /debug behind the proxy:\n%s", c.name, out)
			}
		})
	}
}

// TestForwardProxyRefusals: a site whose certificate the proxy does not
// trust is a 502 whose body says why, seen by curl inside the tunnel; a
// non-loopback -listen without -proxy-auth refuses to start; with
// -proxy-auth, a request without credentials gets a 407.
func TestForwardProxyRefusals(t *testing.T) {
	curl := needPeer(t, "curl")
	p, other := newPKI(t), newPKI(t)
	srv := startServer(t, other, nil) // a site under another root
	proxy, root := startForwardProxy(t, "-cert", p.f("client.crt"), "-key", p.f("client.key"), "-server-cacert", p.f("rootCA.crt"))
	out, _ := runErr(nil, curl, "-sS", "-i", "--proxy", "http://"+proxy, "--cacert", root, "https://"+srv+"/debug")
	if !strings.Contains(out, " 502") || !strings.Contains(out, "server certificate is not trusted: signed by an unknown authority") {
		t.Errorf("an untrusted site through the proxy:\n%s", out)
	}
	t.Logf("untrusted site:\n%s", out)

	out, err := runErr(nil, filepath.Join(binDir, "client"), "-listen", "0.0.0.0:0", "-mitm-ca", t.TempDir())
	if err == nil || !strings.Contains(out, "is not a loopback address") || !strings.Contains(out, "-proxy-auth") {
		t.Errorf("non-loopback -listen without -proxy-auth: %v\n%s", err, out)
	}

	creds := filepath.Join(t.TempDir(), "creds")
	os.WriteFile(creds, []byte("# who may use the proxy\nbot:s3cret\n"), 0o600)
	authed, root2 := startForwardProxy(t, "-proxy-auth", creds, "-server-cacert", p.f("rootCA.crt"))
	good := startServer(t, p, nil)
	out, _ = runErr(nil, curl, "-sS", "-i", "--proxy", "http://"+authed, "--cacert", root2, "https://"+good+"/debug")
	if !strings.Contains(out, "407") {
		t.Errorf("no credentials: want a 407:\n%s", out)
	}
	out, err = runErr(nil, curl, "-sS", "--proxy", "http://bot:s3cret@"+authed, "--cacert", root2, "https://"+good+"/debug")
	if err != nil || !strings.Contains(out, "Client sent TLS Flags: [80]") {
		t.Errorf("with credentials: %v\n%s", err, out)
	}
}

// TestForwardProxyWebSocket: a WebSocket through the forward proxy reaches
// an origin behind the gateway with the bot's certificate (the origin sees
// Client-Cert), messages echoed both ways.
func TestForwardProxyWebSocket(t *testing.T) {
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
	proxy, root := startForwardProxy(t, "-cert", p.f("client.crt"), "-key", p.f("client.key"), "-server-cacert", p.f("rootCA.crt"))

	// CONNECT by hand, TLS trusting the proxy's root, then the WebSocket.
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", gw, gw)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	pool := x509.NewCertPool()
	data, _ := os.ReadFile(root)
	pool.AppendCertsFromPEM(data)
	host, _, _ := net.SplitHostPort(gw)
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: host, NextProtos: []string{"http/1.1"}})
	cfg, err := websocket.NewConfig("wss://"+gw+"/ws", "https://"+gw)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, tc)
	if err != nil {
		t.Fatalf("WebSocket through the forward proxy: %v", err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", "again"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if want := "echo: " + msg + " (client-cert true)"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	t.Logf("WebSocket through the forward proxy and the gateway: two messages echoed, the origin saw the bot's certificate")
}

// TestForwardProxyLoop: a proxy whose own HTTP_PROXY and HTTPS_PROXY point
// at itself answers 508 at once, for http:// and inside a CONNECT tunnel,
// instead of sending the request to itself until it runs out of files.
func TestForwardProxyLoop(t *testing.T) {
	addr := freeAddr(t)
	caDir := filepath.Join(t.TempDir(), "ca")
	self := "http://" + addr
	startBinary(t, "client", []string{"HTTPS_PROXY=" + self, "HTTP_PROXY=" + self, "NO_PROXY="}, spkiLine, "-listen", addr, "-mitm-ca", caDir)
	pool := x509.NewCertPool()
	data, err := os.ReadFile(filepath.Join(caDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(data)
	proxyURL, _ := url.Parse(self)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, u := range []string{"http://loop.invalid/", "https://loop.invalid/"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Errorf("%s through a proxy that proxies through itself: %v", u, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusLoopDetected || !strings.Contains(string(body), "is this proxy itself") {
			t.Errorf("%s: %s\n%s", u, resp.Status, body)
		}
	}
}
