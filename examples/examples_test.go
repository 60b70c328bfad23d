// Package examples tests the example programs as a user runs them: built
// with go build, given certificates from the repository's gencert, and
// talking to each other on the loopback interface.
package examples

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds for every wait, so that a broken program fails the test instead
// of hanging it.
const (
	buildTimeout = 5 * time.Minute
	runTimeout   = 30 * time.Second
)

// buildFlags are extra go build flags for the example programs.
var buildFlags []string

// run runs a command to its end within timeout and returns its combined
// output.
func run(t *testing.T, timeout time.Duration, dir, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after %v\n%s", name, strings.Join(args, " "), timeout, out)
	}
	return string(out), err
}

// serverLog collects the server's log and sends its address on addr
// once it logs the line that names it.
type serverLog struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	addr chan string
}

var listening = regexp.MustCompile(`(?m)listening on (127\.0\.0\.1:[0-9]+)$`)

func (l *serverLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if m := listening.FindStringSubmatch(l.buf.String()); m != nil {
		select {
		case l.addr <- m[1]:
		default: // sent already
		}
	}
	return len(p), nil
}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// A server is the running server example.
type server struct {
	cmd  *exec.Cmd
	log  *serverLog
	done chan struct{} // closed when it has exited, err set
	err  error
}

// startServer starts the server example on a free loopback port and
// returns its address once it has logged it. The server is killed when
// the test ends.
func startServer(t *testing.T, bin, certs string) (string, *server) {
	t.Helper()
	return startServerIn(t, "", filepath.Join(bin, "server"), "-addr", "127.0.0.1:0",
		"-cert", filepath.Join(certs, "server.crt"), "-key", filepath.Join(certs, "server.key"),
		"-bot-cacert", filepath.Join(certs, "rootCA.crt"))
}

// startServerIn starts the server binary with args in dir and returns
// the address it logs.
func startServerIn(t *testing.T, dir, binary string, args ...string) (string, *server) {
	t.Helper()
	s := &server{log: &serverLog{addr: make(chan string, 1)}, done: make(chan struct{})}
	s.cmd = exec.Command(binary, args...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
	select {
	case a := <-s.log.addr:
		return a, s
	case <-s.done:
		t.Fatalf("server exited (%v) without listening:\n%s", s.err, s.log)
	case <-time.After(runTimeout):
		t.Fatalf("server did not log its address within %v:\n%s", runTimeout, s.log)
	}
	panic("unreachable")
}

func TestExamples(t *testing.T) {
	bin := t.TempDir()
	certs := filepath.Join(bin, "certs")
	build := append(append([]string{"build"}, buildFlags...), "-o", bin+string(filepath.Separator), "./server", "./crawler")
	if out, err := run(t, buildTimeout, ".", "go", build...); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, err := run(t, buildTimeout, "..", "go", "build", "-o", filepath.Join(bin, "gencert"), "./cmd/gencert"); err != nil {
		t.Fatalf("go build gencert: %v\n%s", err, out)
	}
	for _, dir := range []string{certs, filepath.Join(bin, "other")} {
		if out, err := run(t, runTimeout, bin, filepath.Join(bin, "gencert"), "-dir", dir); err != nil {
			t.Fatalf("gencert: %v\n%s", err, out)
		}
	}

	addr, srv := startServer(t, bin, certs)
	log := srv.log
	url := "https://" + addr + "/"
	crawl := func(args ...string) (string, error) {
		args = append(args, "-cacert", filepath.Join(certs, "rootCA.crt"), url)
		return run(t, runTimeout, bin, filepath.Join(bin, "crawler"), args...)
	}
	clientCert := []string{"-cert", filepath.Join(certs, "client.crt"), "-key", filepath.Join(certs, "client.key")}
	want := func(t *testing.T, out string, err error, lines ...string) {
		t.Helper()
		if err != nil {
			t.Fatalf("crawler: %v\n%s\nserver log:\n%s", err, out, log)
		}
		for _, l := range lines {
			if !strings.Contains("\n"+out, "\n"+l+"\n") {
				t.Errorf("crawler output lacks the line %q:\n%s", l, out)
			}
		}
	}

	t.Run("flagged", func(t *testing.T) {
		out, err := crawl(append(clientCert, "-body")...)
		want(t, out, err,
			url+" 200 OK, certificate requested: true, sent: true",
			"hello, bot client.example")
	})
	t.Run("no-flag", func(t *testing.T) {
		out, err := crawl(append(clientCert, "-no-flag", "-body")...)
		want(t, out, err,
			url+" 200 OK, certificate requested: false, sent: false",
			"hello, browser or unidentified client (certificate requested: false)")
	})
	t.Run("list", func(t *testing.T) {
		// Several URLs of a list, fetched at once over at most one
		// connection to the host.
		list := filepath.Join(t.TempDir(), "urls")
		os.WriteFile(list, []byte("# to crawl\n"+url+"a\n"+url+"b\n\n"+url+"c\n"), 0o600)
		out, err := crawl(append(clientCert, "-list", list, "-c", "3", "-per-host", "1")...)
		want(t, out, err,
			url+"a 200 OK, certificate requested: true, sent: true",
			url+"b 200 OK, certificate requested: true, sent: true",
			url+"c 200 OK, certificate requested: true, sent: true")
	})
	t.Run("foreign certificate", func(t *testing.T) {
		// A certificate from another root: the server asks for it and,
		// under the verify policy, refuses it with an alert.
		other := filepath.Join(bin, "other")
		out, err := crawl("-cert", filepath.Join(other, "client.crt"), "-key", filepath.Join(other, "client.key"), "-body")
		if err == nil {
			t.Fatalf("crawler succeeded with a certificate the server does not trust:\n%s", out)
		}
		for _, s := range []string{url + " error: ", "bad_certificate"} {
			if !strings.Contains(out, s) {
				t.Errorf("crawler output lacks %q:\n%s", s, out)
			}
		}
		if strings.Contains(out, "hello") {
			t.Errorf("the server answered a refused client:\n%s", out)
		}
	})

	// SIGINT shuts the server down gracefully, and it exits cleanly.
	if err := srv.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.done:
		if srv.err != nil || !strings.Contains(log.String(), "shutting down") {
			t.Errorf("server after SIGINT: %v\n%s", srv.err, log)
		}
	case <-time.After(runTimeout):
		t.Fatalf("server still running %v after SIGINT:\n%s", runTimeout, log)
	}
}

// A codeLine is a line of a code block of a Markdown page, fenced or
// indented, with its line number and the block it belongs to.
type codeLine struct {
	n, block int
	text     string
}

func codeLines(md string) []codeLine {
	var out []codeLine
	fenced, indented, prevBlank, block := false, false, true, 0
	for i, line := range strings.Split(md, "\n") {
		blank := strings.TrimSpace(line) == ""
		switch {
		case strings.HasPrefix(strings.TrimSpace(line), "```"):
			fenced = !fenced
			block++
		case fenced:
			out = append(out, codeLine{i + 1, block, line})
		case strings.HasPrefix(line, "    ") && (indented || prevBlank):
			if !indented {
				block++
			}
			indented = true
			out = append(out, codeLine{i + 1, block, strings.TrimPrefix(line, "    ")})
		case !blank:
			indented = false
		}
		prevBlank = blank
	}
	return out
}

// helpDefaults returns the flags a program's -h lists, with their
// defaults ("" for none).
func helpDefaults(t *testing.T, binary string) map[string]string {
	t.Helper()
	out, _ := run(t, runTimeout, "", binary, "-h")
	flags := map[string]string{}
	name := ""
	for _, line := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`^  -([a-z-]+)`).FindStringSubmatch(line); m != nil {
			name = m[1]
			flags[name] = ""
		}
		if m := regexp.MustCompile(`\(default "?([^")]*)"?\)`).FindStringSubmatch(line); m != nil && name != "" {
			flags[name] = m[1]
		}
	}
	if len(flags) < 4 {
		t.Fatalf("%s -h lists %d flags:\n%s", binary, len(flags), out)
	}
	return flags
}

// TestReadme runs README.md's "Running them by hand" as written, with
// /tmp/ a scratch directory: the lines before ./server in this directory,
// ./server in the directory the page changes to (on a free port instead
// of its default), and each $ command there, whose output must be the
// lines the page shows under it. The defaults the page gives in the
// server's comment are the server's, the flags the table names are the
// programs', and the line counts it gives are the files'.
func TestReadme(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	_, byHand, ok := strings.Cut(md, "## Running them by hand")
	if !ok {
		t.Fatal("README.md has no section \"Running them by hand\"")
	}
	offset := strings.Count(md[:len(md)-len(byHand)], "\n")
	root := t.TempDir()
	rewrite := func(s string) string { return strings.ReplaceAll(s, "/tmp/", root+"/") }

	type step struct {
		line, block int
		cmd         string
		want        []string
	}
	var setup []string
	var steps []step
	serverLine, serverDir := "", ""
	for _, c := range codeLines(byHand) {
		text := strings.TrimRight(c.text, " ")
		switch {
		case strings.HasPrefix(text, "$ "):
			steps = append(steps, step{line: c.n + offset, block: c.block, cmd: text[2:]})
		case serverLine == "" && strings.HasPrefix(text, "./server"):
			serverLine = text
		case serverLine == "" && strings.HasPrefix(text, "cd "):
			serverDir = rewrite(strings.TrimSpace(text[3:]))
		case serverLine == "":
			setup = append(setup, text)
		case len(steps) > 0 && steps[len(steps)-1].block == c.block:
			steps[len(steps)-1].want = append(steps[len(steps)-1].want, text)
		}
	}
	if serverLine == "" || serverDir == "" || len(setup) == 0 || len(steps) < 3 {
		t.Fatalf("README.md: no setup, cd, ./server and commands found in \"Running them by hand\" (setup %q, server %q in %q, %d commands)", setup, serverLine, serverDir, len(steps))
	}
	script := rewrite(strings.Join(setup, "\n"))
	if out, err := run(t, buildTimeout, ".", "bash", "-euo", "pipefail", "-c", script); err != nil {
		t.Fatalf("README.md: the setup fails: %v\n%s\n%s", err, script, out)
	}

	// The defaults the server's comment gives are its own.
	serverBin := filepath.Join(serverDir, "server")
	args, comment, _ := strings.Cut(strings.TrimPrefix(serverLine, "./server"), "#")
	defaults := helpDefaults(t, serverBin)
	given := strings.Fields(comment)
	for i := 0; i+1 < len(given); i += 2 {
		if name := strings.TrimPrefix(given[i], "-"); defaults[name] != given[i+1] {
			t.Errorf("README.md: the server's comment gives %s %s; its default is %q", given[i], given[i+1], defaults[name])
		}
	}
	// Flags the table names.
	crawlerFlags := helpDefaults(t, filepath.Join(serverDir, "crawler"))
	for _, line := range strings.Split(md, "\n") {
		m := regexp.MustCompile("^\\| \\[`(\\w+)/main.go`\\]\\([^)]*\\) \\| (\\d+) \\| (.*)$").FindStringSubmatch(line)
		if m == nil {
			continue
		}
		src, err := os.ReadFile(filepath.Join(m[1], "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(src), "\n"); strconv.Itoa(n) != m[2] {
			t.Errorf("README.md: %s/main.go is %s lines, says the table; it has %d", m[1], m[2], n)
		}
		flags := map[string]map[string]string{"server": defaults, "crawler": crawlerFlags}[m[1]]
		for _, f := range regexp.MustCompile("`(-[a-z-]+)").FindAllStringSubmatch(m[3], -1) {
			if _, ok := flags[f[1][1:]]; !ok {
				t.Errorf("README.md: the table names %s, which %s does not have", f[1], m[1])
			}
		}
	}

	addr, _ := startServerIn(t, serverDir, serverBin, append(strings.Fields(args), "-addr", "127.0.0.1:0")...)
	_, port, _ := strings.Cut(addr, ":")
	local := func(s string) string { return strings.ReplaceAll(rewrite(s), "localhost:8443", "localhost:"+port) }
	for _, s := range steps {
		out, _ := run(t, runTimeout, serverDir, "bash", "-c", local(s.cmd))
		got := strings.Split(strings.TrimRight(out, "\n"), "\n")
		want := make([]string, len(s.want))
		for i, w := range s.want {
			want[i] = local(w)
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("README.md:%d: $ %s\nprints:\n%s\nthe page shows:\n%s", s.line, s.cmd, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}
