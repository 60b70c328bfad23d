package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/server"
)

// runCLI runs the command with args and returns its exit status and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := (&cli{stdout: &stdout, stderr: &stderr}).run(context.Background(), args)
	return code, stdout.String(), stderr.String()
}

func startServer(t *testing.T, p *testpki.PKI, policy server.Policy) string {
	t.Helper()
	srv, err := server.New(server.Config{CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientCAFile: p.RootCA, Policy: policy,
		Now: time.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return ln.Addr().String()
}

type jsonFailure struct {
	Error, Alert, Hint string
	Handshake          *struct {
		CertRequested bool `json:"cert_requested"`
	}
}

// TestJSONFailure: with -json a failure is an object on stdout, and the
// person still reads it on stderr; a certificate required without -cert
// says to pass one.
func TestJSONFailure(t *testing.T) {
	p := testpki.NewAt(t, time.Now()) // the CLI checks the wall clock
	addr := startServer(t, p, server.PolicyRequire)
	code, stdout, stderr := runCLI(t, "-json", "-tlsflags", "80", "-server-cacert", p.RootCA, "-connect", "https://"+addr+"/debug")
	var f jsonFailure
	if err := json.Unmarshal([]byte(stdout), &f); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
	}
	want := jsonFailure{Error: "server requires a client certificate and none was sent: certificate_required", Alert: "certificate_required",
		Hint: "pass one with -cert and -key, issued by a CA the server trusts"}
	if code != 1 || f.Error != want.Error || f.Alert != want.Alert || f.Hint != want.Hint || f.Handshake == nil || !f.Handshake.CertRequested {
		t.Errorf("exit %d, %+v", code, f)
	}
	if !strings.Contains(stderr, "client: error: "+want.Error+"\n") || !strings.Contains(stderr, "client: hint: "+want.Hint+"\n") {
		t.Errorf("stderr:\n%s", stderr)
	}

	// Before any handshake: no handshake in the object, "" for no alert.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := ln.Addr().String()
	ln.Close()
	code, stdout, _ = runCLI(t, "-json", "-connect", "https://"+refused+"/")
	var raw map[string]any
	if err := json.Unmarshal([]byte(stdout), &raw); err != nil || code != 1 {
		t.Fatalf("exit %d, %v\n%s", code, err, stdout)
	}
	if raw["error"] != "connect to "+refused+": connection refused" || raw["alert"] != "" || raw["hint"] == "" || raw["handshake"] != nil {
		t.Errorf("refused: %v", raw)
	}
}

// TestStalledHandshake: a server that accepts and never answers is a
// handshake timeout, not a connect timeout.
func TestStalledHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	code, _, stderr := runCLI(t, "-timeout", "300ms", "-connect", "https://"+ln.Addr().String()+"/")
	if want := "client: error: TLS handshake with " + ln.Addr().String() + ": timed out after 300ms\n"; code != 1 || !strings.HasPrefix(stderr, want) ||
		!strings.Contains(stderr, "client: hint: the server accepted the connection but did not complete the handshake") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
}

// TestHeaders: -i prints the status line and the headers before the body.
func TestHeaders(t *testing.T) {
	p := testpki.NewAt(t, time.Now()) // the CLI checks the wall clock
	addr := startServer(t, p, server.PolicyRequest)
	code, stdout, stderr := runCLI(t, "-i", "-server-cacert", p.RootCA, "-connect", "https://"+addr+"/debug")
	head, body, ok := strings.Cut(stdout, "\n\n")
	if code != 0 || !ok || !strings.HasPrefix(head, "HTTP/2.0 200 OK\n") || !strings.Contains(head, "\nContent-Type: text/plain") ||
		!strings.HasPrefix(body, "Client sent TLS Flags: []\n") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	// And in -json, the headers are there.
	_, stdout, _ = runCLI(t, "-json", "-server-cacert", p.RootCA, "-connect", "https://"+addr+"/debug")
	var out struct {
		Headers map[string][]string
		Error   *string
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil || len(out.Headers["Content-Type"]) != 1 || out.Error != nil {
		t.Errorf("%v: %s", err, stdout)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"text/plain; charset=utf-8": "text/plain; charset=utf-8",
		`W/"etag"`:                  `W/"etag"`,
		"é ü":                       "é ü",
		"a\nb\x1b[0m":               `a\nb\x1b[0m`,
		"bad\xffbyte":               `bad\xffbyte`,
		"\u202etxt":                 `\u202etxt`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseResolve(t *testing.T) {
	for in, want := range map[string][2]string{
		"example.com:443:127.0.0.1":       {"example.com:443", "127.0.0.1:443"},
		"Example.COM:8775:192.0.2.1":      {"example.com:8775", "192.0.2.1:8775"},
		"example.com:443:[2001:db8::1]":   {"example.com:443", "[2001:db8::1]:443"},
		"example.com:443:2001:db8::1":     {"example.com:443", "[2001:db8::1]:443"},
		"[::1]:443:127.0.0.1":             {"[::1]:443", "127.0.0.1:443"},
		"example.com:443:origin.internal": {"example.com:443", "origin.internal:443"},
	} {
		k, a, err := parseResolve(in)
		if err != nil || k != want[0] || a != want[1] {
			t.Errorf("parseResolve(%q) = %q, %q, %v; want %q, %q", in, k, a, err, want[0], want[1])
		}
	}
	for in, want := range map[string]string{
		"example.com":                     "no port",
		"example.com:443":                 "no address",
		"example.com:https:1.2.3.4":       `port "https" is not a number`,
		"example.com:0:1.2.3.4":           "port \"0\"",
		":443:1.2.3.4":                    "empty host",
		"example.com:443:":                "empty address",
		"example.com:443:1.2.3.4,5.6.7.8": "one address only",
		"[::1:443:1.2.3.4":                "unclosed [",
	} {
		if _, _, err := parseResolve(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseResolve(%q): %v, want %q", in, err, want)
		}
	}
}

// TestResolveServerNameInsecureCLI: --resolve connects elsewhere for a name
// no resolver knows, -servername picks the name verified, -k warns, and -v
// shows the server's certificate.
func TestResolveServerNameInsecureCLI(t *testing.T) {
	p := testpki.NewAt(t, time.Now()) // the CLI checks the wall clock
	addr := startServer(t, p, server.PolicyRequest)
	_, port, _ := net.SplitHostPort(addr)
	url := "https://bot.invalid:" + port + "/debug"

	code, stdout, stderr := runCLI(t, "-v", "--resolve", "bot.invalid:"+port+":127.0.0.1", "-servername", "localhost",
		"-server-cacert", p.RootCA, "-connect", url)
	if code != 0 || !strings.HasPrefix(stdout, "Client sent TLS Flags: []") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"* connected to " + addr + `, SNI "localhost"` + "\n",
		"* server certificate: CN=localhost\n",
		"*   issuer: CN=test client root\n",
		"*   names: DNS:localhost, IP:127.0.0.1, IP:::1\n",
		"*   sha256: ",
		"*   verified: yes\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	// Without -servername the URL's host is verified, and the certificate
	// does not name it.
	code, _, stderr = runCLI(t, "--resolve", "bot.invalid:"+port+":127.0.0.1", "-server-cacert", p.RootCA, "-connect", url)
	if code != 1 || !strings.Contains(stderr, "client: error: server certificate does not match the host: x509: certificate is valid for localhost, not bot.invalid") {
		t.Errorf("exit %d\n%s", code, stderr)
	}

	// -k: no verification, a warning, and -v says so.
	code, _, stderr = runCLI(t, "-k", "-v", "-connect", "https://"+addr+"/debug")
	if code != 0 || !strings.Contains(stderr, "client: warning: -k: the server's certificate is not verified") || !strings.Contains(stderr, "*   verified: NO (-k)\n") {
		t.Errorf("exit %d\n%s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "-k", "-server-cacert", p.RootCA, "-connect", "https://"+addr+"/debug"); code != 2 || !strings.Contains(stderr, "give one or the other") {
		t.Errorf("-k with -server-cacert: exit %d\n%s", code, stderr)
	}

	// A --resolve entry for another host: a warning, and the URL's host as usual.
	code, _, stderr = runCLI(t, "--resolve", "other.invalid:443:127.0.0.1", "-server-cacert", p.RootCA, "-connect", "https://"+addr+"/debug")
	if code != 0 || !strings.Contains(stderr, "client: warning: no --resolve entry is for "+addr) {
		t.Errorf("exit %d\n%s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "--resolve", "bot.invalid:443", "-connect", url); code != 2 || !strings.Contains(stderr, "is not HOST:PORT:ADDR: no address") {
		t.Errorf("bad --resolve: exit %d\n%s", code, stderr)
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := parsePrefixes("127.0.0.0/8, ::1,169.254.169.254,10.1.2.3/8")
	if want := "[127.0.0.0/8 ::1/128 169.254.169.254/32 10.0.0.0/8]"; err != nil || fmt.Sprint(got) != want {
		t.Errorf("got %v, %v; want %s", got, err, want)
	}
	for _, bad := range []string{"localhost", "127.0.0.0/33", "fe80::1%eth0", "10.0.0.0/8,"} {
		if _, err := parsePrefixes(bad); err == nil || !strings.Contains(err.Error(), "is not a CIDR prefix") {
			t.Errorf("parsePrefixes(%q): %v", bad, err)
		}
	}
	if code, _, stderr := runCLI(t, "-allow-destinations", "127.0.0.1"); code != 2 || !strings.Contains(stderr, "go with -listen") {
		t.Errorf("-allow-destinations without -listen: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "-listen", "127.0.0.1:0", "-mitm-ca", t.TempDir(), "-allow-destinations", "nope"); code != 2 ||
		!strings.Contains(stderr, `client: -allow-destinations: "nope" is not a CIDR prefix`) {
		t.Errorf("bad -allow-destinations: exit %d\n%s", code, stderr)
	}
}
