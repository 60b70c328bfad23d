package e2e

// Docs that cannot rot: every relative link in the Markdown resolves (files
// and heading anchors), every flag a documented command line passes to
// bin/client, bin/server or bin/gencert exists in that binary, every shell
// example of the pages for sites and bots runs, and the overview picture
// renders.
//
// The shell examples of docs/site.md and docs/bot.md run in order, in one
// scratch directory per page (with bin/ the binaries just built, and HOME
// the scratch directory), each block a bash script with -euo pipefail. An
// HTML comment on the line before a block says how:
//
//	<!-- run: background -->        started, left running (its server ends
//	                                 in &); the loopback ports it names
//	                                 must accept connections, and one of
//	                                 them at least be free before
//	<!-- run: expect TEXT -->        must succeed with TEXT in its output
//	<!-- run: fails TEXT -->         must fail with TEXT in its output
//	<!-- covered-by: TestName -->    not run here: TestName (in e2e) runs
//	                                 it, and its source names every flag
//
// and a block with no comment must succeed. Loopback ports in a page are
// replaced by free ones, the same throughout the page (in the TEXT of run
// comments too).

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/testutil"
)

// mdFiles are the Markdown files the checks read.
func mdFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"../README.md"}
	for _, glob := range []string{"../docs/*.md", "../assets/*.md", "../testdata/*.md", "../examples/*.md", "../third_party/*/*.md"} {
		m, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	return files
}

// mdLink matches an inline link or image: [text](target) or ![alt](target).
var mdLink = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)\)`)

// withoutCode blanks fenced and indented code blocks and inline code, where
// brackets are code, not links. An indented line is code only where an
// indented block can start, after a blank line (or in one): indented
// lines under a list item are its text.
func withoutCode(md string) string {
	var b strings.Builder
	fenced, inBlock, prevBlank := false, false, true
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			b.WriteString("\n")
			continue
		}
		indented := strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t")
		blank := strings.TrimSpace(line) == ""
		inBlock = indented && (inBlock || prevBlank) || blank && inBlock
		prevBlank = blank
		if fenced || inBlock {
			b.WriteString("\n")
			continue
		}
		b.WriteString(inlineCode.ReplaceAllString(line, "``") + "\n")
	}
	return b.String()
}

var inlineCode = regexp.MustCompile("`[^`]*`")

// anchors returns the GitHub anchors of a Markdown file's headings.
func anchors(md string) map[string]bool {
	a := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		slug := anchorSlug(h)
		if n := seen[slug]; n > 0 {
			a[fmt.Sprintf("%s-%d", slug, n)] = true
		} else {
			a[slug] = true
		}
		seen[slug]++
	}
	return a
}

// anchorSlug is GitHub's: lower case, punctuation dropped but for hyphens
// and underscores, spaces to hyphens.
func anchorSlug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127 && !strings.ContainsRune("—–’‘“”…·÷×", r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// brokenLinks returns the relative links of file (contents md) that do
// not resolve.
func brokenLinks(file, md string) []string {
	var broken []string
	for _, m := range mdLink.FindAllStringSubmatch(withoutCode(md), -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		path, frag, _ := strings.Cut(target, "#")
		resolved := file
		if path != "" {
			resolved = filepath.Join(filepath.Dir(file), path)
			if _, err := os.Stat(resolved); err != nil {
				broken = append(broken, fmt.Sprintf("%s: %s: no such file", file, target))
				continue
			}
		}
		if frag == "" || !strings.HasSuffix(resolved, ".md") {
			continue
		}
		data, err := os.ReadFile(resolved)
		if err != nil {
			broken = append(broken, fmt.Sprintf("%s: %s: %v", file, target, err))
			continue
		}
		if !anchors(string(data))[frag] {
			broken = append(broken, fmt.Sprintf("%s: %s: no heading with that anchor in %s", file, target, resolved))
		}
	}
	return broken
}

func TestDocsLinks(t *testing.T) {
	n := 0
	for _, f := range mdFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n += len(mdLink.FindAllString(withoutCode(string(data)), -1))
		for _, b := range brokenLinks(f, string(data)) {
			t.Error(b)
		}
	}
	if n < 20 {
		t.Errorf("only %d links found: is the link pattern right?", n)
	}
}

// TestDocsLinksCatchBreakage: the checker itself finds a broken file link
// and a broken anchor.
func TestDocsLinksCatchBreakage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "b.md"), []byte("# Running a site\n\n## The gateway: `-upstream`\n"), 0o644)
	md := "[ok](b.md#running-a-site) [ok2](b.md#the-gateway--upstream) [gone](c.md) [bad anchor](b.md#nope) `[not](a-link.md)`\n" +
		"- a list item\n    continued with [a link](gone2.md)\n\n    [code, not a link](x.md)\n"
	got := brokenLinks(filepath.Join(dir, "a.md"), md)
	if len(got) != 3 || !strings.Contains(got[0], "c.md: no such file") || !strings.Contains(got[1], "b.md#nope") || !strings.Contains(got[2], "gone2.md") {
		t.Errorf("broken links found: %q", got)
	}
}

// commandLine matches a documented invocation of a binary, up to the end
// of the line, a pipe, a table cell or inline code's end.
var commandLine = regexp.MustCompile("(?:(?:^|[\\s`(/])bin/|`)(client|server|gencert)((?:[ \\t]+[^\\s`|;&)]+)*)")

// documentedFlags returns, by binary, the flags that the Markdown passes to
// it, each with where.
func documentedFlags(file, md string) map[string]map[string]string {
	out := map[string]map[string]string{}
	// Continuation lines join their command.
	md = strings.ReplaceAll(md, "\\\n", " ")
	for i, line := range strings.Split(md, "\n") {
		for _, m := range commandLine.FindAllStringSubmatch(line, -1) {
			bin := m[1]
			for _, arg := range strings.Fields(m[2]) {
				if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
					continue
				}
				name := strings.TrimLeft(arg, "-")
				name, _, _ = strings.Cut(name, "=")
				if !regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9-]*$`).MatchString(name) {
					continue // a value: -1, -'...'
				}
				if out[bin] == nil {
					out[bin] = map[string]string{}
				}
				out[bin][name] = fmt.Sprintf("%s:%d", file, i+1)
			}
		}
	}
	return out
}

// tableFlag is a flag in a table's first cell: `-name`, `-name VALUE`,
// `--name` (not `-name-*`, a family).
var tableFlag = regexp.MustCompile("`--?([a-zA-Z][a-zA-Z0-9-]*)[` ]")

// helpFlags returns the flags a binary's -h names.
func helpFlags(t *testing.T, bin string) map[string]bool {
	t.Helper()
	out, _ := runErr(nil, filepath.Join(binDir, bin), "-h")
	flags := map[string]bool{"h": true, "help": true}
	for _, m := range regexp.MustCompile(`(?:^|[\s,\[(])--?([a-zA-Z][a-zA-Z0-9-]*)`).FindAllStringSubmatch(out, -1) {
		flags[m[1]] = true
	}
	if len(flags) < 8 {
		t.Fatalf("%s -h names only %d flags:\n%s", bin, len(flags), out)
	}
	return flags
}

func TestDocsFlags(t *testing.T) {
	known := map[string]map[string]bool{}
	for _, bin := range []string{"client", "server", "gencert"} {
		known[bin] = helpFlags(t, bin)
	}
	total := 0
	for _, f := range mdFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for bin, flags := range documentedFlags(f, string(data)) {
			for name, where := range flags {
				total++
				if !known[bin][name] {
					t.Errorf("%s: bin/%s has no flag -%s", where, bin, name)
				}
			}
		}
	}
	if total < 40 {
		t.Errorf("only %d documented flags found: is the command pattern right?", total)
	}
	// The flag tables: every flag a row names in its first cell is one
	// of the binaries'.
	rows := 0
	for _, f := range mdFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if !strings.HasPrefix(line, "| `-") {
				continue
			}
			cell, _, _ := strings.Cut(line[2:], " | ")
			for _, m := range tableFlag.FindAllStringSubmatch(cell, -1) {
				rows++
				if name := m[1]; !known["client"][name] && !known["server"][name] && !known["gencert"][name] {
					t.Errorf("%s:%d: the table names -%s, which no binary has", f, i+1, name)
				}
			}
		}
	}
	if rows < 60 {
		t.Errorf("only %d flags found in flag tables", rows)
	}
	// The checker itself: an unknown flag is caught.
	bad := documentedFlags("x.md", "    bin/server -cert a.crt \\\n        -no-such-flag 3\n")
	if bad["server"]["no-such-flag"] == "" || known["server"]["no-such-flag"] {
		t.Errorf("an unknown flag on a continuation line is not caught: %v", bad)
	}
}

// A docBlock is one fenced shell block of a page and how to run it.
type docBlock struct {
	line int
	body string
	how  string // "", "background", "expect", "fails", "covered-by"
	arg  string
}

var runComment = regexp.MustCompile(`^<!--\s*(run|covered-by):\s*(\S+)?\s*(.*?)\s*-->$`)

func shellBlocks(md string) []docBlock {
	var blocks []docBlock
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		fence := strings.TrimSpace(lines[i])
		if fence != "```sh" && fence != "```bash" && fence != "```console" {
			continue
		}
		b := docBlock{line: i + 1}
		if i > 0 {
			if m := runComment.FindStringSubmatch(strings.TrimSpace(lines[i-1])); m != nil {
				if m[1] == "covered-by" {
					b.how, b.arg = "covered-by", m[2]
				} else {
					b.how, b.arg = m[2], m[3]
				}
			}
		}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		b.body = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, b)
	}
	return blocks
}

var loopbackPort = regexp.MustCompile(`\b(localhost|127\.0\.0\.1):(\d{4,5})\b`)

func TestDocsExamples(t *testing.T) {
	for _, page := range []string{"site", "bot"} {
		t.Run(page, func(t *testing.T) { runPage(t, filepath.Join("..", "docs", page+".md")) })
	}
}

func runPage(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	md := string(data)
	blocks := shellBlocks(md)
	if len(blocks) < 5 {
		t.Fatalf("%s: only %d shell blocks", file, len(blocks))
	}
	for _, tool := range []string{"curl", "openssl", "node", "chromium"} {
		if slices.ContainsFunc(blocks, func(b docBlock) bool { return b.how != "covered-by" && strings.Contains(b.body, tool+" ") }) {
			needPeer(t, tool)
		}
	}
	// The same free port for each port the page names, a different one for
	// each: the listeners stay open until all are chosen, or the kernel may
	// hand out a port just closed again.
	ports := map[string]string{}
	var held []net.Listener
	for _, m := range loopbackPort.FindAllStringSubmatch(md, -1) {
		if ports[m[2]] == "" {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, ln)
			_, ports[m[2]], _ = net.SplitHostPort(ln.Addr().String())
		}
	}
	for _, ln := range held {
		ln.Close()
	}
	rewrite := func(s string) string {
		return loopbackPort.ReplaceAllStringFunc(s, func(hp string) string {
			m := loopbackPort.FindStringSubmatch(hp)
			return m[1] + ":" + ports[m[2]]
		})
	}
	dir := t.TempDir()
	if err := os.Symlink(binDir, filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	// python3 is Debian's, with requests, ahead of any other.
	shims := filepath.Join(dir, ".shims")
	os.Mkdir(shims, 0o755)
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		os.Symlink("/usr/bin/python3", filepath.Join(shims, "python3"))
	}
	// No proxy from the environment: an empty https_proxy would hide the
	// HTTPS_PROXY a block sets from Python.
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasSuffix(strings.ToLower(name), "_proxy") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+dir, "PATH="+shims+":"+binDir+":"+os.Getenv("PATH"))
	e2eSource := e2eSources(t)
	for _, b := range blocks {
		body, arg := rewrite(b.body), rewrite(b.arg)
		where := fmt.Sprintf("%s:%d", file, b.line)
		switch b.how {
		case "covered-by":
			checkCoveredBy(t, where, b, e2eSource)
		case "background":
			startBlock(t, dir, env, where, body)
		case "", "expect", "fails":
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", body)
			cmd.Dir, cmd.Env = dir, env
			cmd.Stdin = strings.NewReader("")
			out, err := cmd.CombinedOutput()
			cancel()
			switch {
			case b.how == "fails" && err == nil:
				t.Errorf("%s: succeeded, want a failure with %q:\n%s\n%s", where, arg, body, out)
			case b.how != "fails" && err != nil:
				t.Errorf("%s: %v:\n%s\n%s", where, err, body, out)
			case arg != "" && !bytes.Contains(out, []byte(arg)):
				t.Errorf("%s: output lacks %q:\n%s\n%s", where, arg, body, out)
			default:
				t.Logf("%s: ran (%s)", where, strings.SplitN(strings.TrimSpace(body), "\n", 2)[0])
			}
		default:
			t.Fatalf("%s: unknown run comment %q", where, b.how)
		}
		if t.Failed() {
			return
		}
	}
}

// startBlock runs a block in the background until the test ends and waits
// for the loopback ports it names to accept connections. One of them at
// least must be new: a block whose every port was taken before it started
// clashes with an earlier one (its server cannot listen, and the earlier
// server would answer in its place).
func startBlock(t *testing.T, dir string, env []string, where, body string) {
	t.Helper()
	taken := map[string]bool{}
	for _, m := range loopbackPort.FindAllStringSubmatch(body, -1) {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", m[2]), time.Second); err == nil {
			c.Close()
			taken[m[2]] = true
		}
	}
	if ports := loopbackPort.FindAllStringSubmatch(body, -1); len(ports) > 0 && !slices.ContainsFunc(ports, func(m []string) bool { return !taken[m[2]] }) {
		t.Fatalf("%s: every port the block names is in use before it starts: it clashes with an earlier block:\n%s", where, body)
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", body)
	cmd.Dir, cmd.Env = dir, env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A block whose server ends in & returns at once, leaving it running
	// in the block's process group: only a failure counts.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	for _, m := range loopbackPort.FindAllStringSubmatch(body, -1) {
		addr := net.JoinHostPort("127.0.0.1", m[2])
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			select {
			case <-exited:
				if waitErr != nil {
					t.Fatalf("%s: failed at start (%v):\n%s\n%s", where, waitErr, body, out.String())
				}
			default:
			}
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: nothing listens on %s after 20 s:\n%s\n%s", where, addr, body, out.String())
			}
		}
	}
	t.Logf("%s: started (%s)", where, strings.SplitN(strings.TrimSpace(body), "\n", 2)[0])
}

// e2eSources returns the e2e tests' source, for covered-by.
func e2eSources(t *testing.T) string {
	t.Helper()
	files, _ := filepath.Glob("*_test.go")
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}

// checkCoveredBy: the test named exists, and every flag the block passes
// to a binary appears in the e2e sources as a string.
func checkCoveredBy(t *testing.T, where string, b docBlock, src string) {
	t.Helper()
	if !strings.Contains(src, "func "+b.arg+"(t *testing.T)") {
		t.Errorf("%s: covered by %s, which is not an e2e test", where, b.arg)
		return
	}
	for _, flags := range documentedFlags(where, b.body) {
		for name := range flags {
			if !strings.Contains(src, `"-`+name+`"`) {
				t.Errorf("%s: -%s is not in any e2e test: %s does not run this command", where, name, b.arg)
			}
		}
	}
}

// TestDocsPicture renders the overview picture in headless Chromium: a
// well-formed SVG that names both sides, drawn with more than a few
// colours.
func TestDocsPicture(t *testing.T) {
	svgFile, err := filepath.Abs("../assets/overview.svg")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(svgFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(data, new(struct{ XMLName xml.Name })); err != nil {
		t.Fatalf("overview.svg is not well-formed XML: %v", err)
	}
	for _, want := range []string{"crawler", "forward proxy", "flag 80", "gateway", "origin", "CertificateRequest"} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("overview.svg does not say %q", want)
		}
	}
	chromium := needPeer(t, "chromium")
	dir := t.TempDir()
	shot := filepath.Join(dir, "overview.png")
	img := screenshot(t, chromium, shot, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=960,420", "file://"+svgFile)
	if colors := distinctColors(img); colors < 6 {
		t.Errorf("rendered overview has %d colours: blank?", colors)
	}
	if keep := os.Getenv("REQ_MTLS_SCREENSHOT_OVERVIEW"); keep != "" {
		data, _ := os.ReadFile(shot)
		os.WriteFile(keep, data, 0o644)
	}
}

// TestDocsBenchTables: the tables of docs/performance.md are those make
// bench OUT=assets last wrote, row for row.
func TestDocsBenchTables(t *testing.T) {
	page, err := os.ReadFile("../docs/performance.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for _, f := range []string{"../assets/bench.md", "../assets/bench-load.md", "../assets/bench-memory.md", "../assets/bench-forward.md", "../assets/bench-shared.md"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "|---") {
				continue
			}
			rows++
			if !bytes.Contains(page, []byte(line+"\n")) {
				t.Errorf("docs/performance.md lacks this row of %s (run make bench OUT=assets and copy its tables): %s", f, line)
			}
		}
	}
	if rows < 20 {
		t.Errorf("only %d table rows in assets/bench*.md", rows)
	}
}

// TestDocsGoFromClone runs docs/go.md's lines for a module path no proxy
// serves, as written, in a scratch directory where req-mtls is this
// checkout instead of a fresh clone: the binaries install from it, a
// module of one's own requires the packages through the replace directive,
// and a crawler built on them sends flag 80 and has its certificate
// validated by a server. The go.work route the page gives builds the same
// crawler in a module that requires nothing. What the page says of proxies
// holds for that crawler: HTTPS_PROXY is used for other hosts and ignored
// for localhost and loopback addresses, and a proxy named in
// ClientConfig.Proxy is used for them too.
func TestDocsGoFromClone(t *testing.T) {
	data, err := os.ReadFile("../docs/go.md")
	if err != nil {
		t.Fatal(err)
	}
	var block *docBlock
	for _, b := range shellBlocks(string(data)) {
		if b.how == "covered-by" && b.arg == "TestDocsGoFromClone" {
			block = &b
		}
	}
	if block == nil {
		t.Fatal("docs/go.md: no shell block covered by TestDocsGoFromClone: the page gives no route that works from a clone")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(root, filepath.Join(dir, "req-mtls")); err != nil {
		t.Fatal(err)
	}
	// The clone is this checkout: every other line runs as written.
	const cloneLine = "git clone https://github.com/req-mtls/req-mtls"
	script, cloned := "", false
	for _, line := range strings.Split(block.body, "\n") {
		if strings.TrimSpace(line) == cloneLine {
			line, cloned = ": cloned", true
		}
		script += line + "\n"
	}
	if !cloned {
		t.Fatalf("docs/go.md:%d: the block does not start from %q:\n%s", block.line, cloneLine, block.body)
	}
	gobin := filepath.Join(dir, "gobin")
	var env []string
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); name != "GOBIN" && name != "GOWORK" {
			env = append(env, kv)
		}
	}
	env = append(env, "GOBIN="+gobin)
	sh := func(dir, script string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v:\n%s\n%s", err, script, out)
		}
		return string(out)
	}
	sh(dir, script)
	for _, bin := range []string{"client", "server", "gencert"} {
		if out, err := runErr(nil, filepath.Join(gobin, bin), "-version"); err != nil {
			t.Errorf("%s, installed from the clone: %v\n%s", bin, err, out)
		}
	}

	// A crawler of one's own, in the module the block made, and again in
	// one that goes through a go.work.
	const crawler = `package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	reqmtls "github.com/req-mtls/req-mtls"
)

func main() {
	roots, err := reqmtls.LoadCertPool(os.Args[1])
	if err != nil {
		panic(err)
	}
	cfg := reqmtls.ClientConfig{Flags: reqmtls.RequestMTLSFlags,
		CertFile: os.Args[2], KeyFile: os.Args[3], RootCAs: roots}
	if len(os.Args) > 5 { // a proxy named, as the page says
		proxyURL, err := url.Parse(os.Args[5])
		if err != nil {
			panic(err)
		}
		cfg.Proxy = http.ProxyURL(proxyURL)
	}
	t, err := reqmtls.NewTransport(cfg)
	if err != nil {
		panic(err)
	}
	resp, err := (&http.Client{Transport: t}).Get(os.Args[4])
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	io.Copy(os.Stdout, resp.Body)
	fmt.Println(resp.Status)
}
`
	work := filepath.Join(dir, "workcrawler")
	os.Mkdir(work, 0o755)
	sh(work, "go mod init example.com/workcrawler\ngo work init . ../req-mtls\n")
	p := pki{filepath.Join(dir, "certs")}
	run(t, nil, filepath.Join(binDir, "gencert"), "-dir", p.dir, "-host", "bots.example")
	addr := startServer(t, p, nil)
	_, port, _ := net.SplitHostPort(addr)
	fetch := func(env []string, args ...string) string {
		t.Helper()
		args = append([]string{p.f("rootCA.crt"), p.f("client.crt"), p.f("client.key")}, args...)
		out := run(t, env, filepath.Join(dir, "mycrawler", "crawler"), args...)
		if !strings.Contains(out, "Cert validated: true") || !strings.Contains(out, "200 OK") {
			t.Errorf("crawler %s: not validated:\n%s", args[3], out)
		}
		return out
	}
	for _, mod := range []string{filepath.Join(dir, "mycrawler"), work} {
		if err := os.WriteFile(filepath.Join(mod, "main.go"), []byte(crawler), 0o644); err != nil {
			t.Fatal(err)
		}
		sh(mod, "go build -o crawler .")
		out := run(t, nil, filepath.Join(mod, "crawler"), p.f("rootCA.crt"), p.f("client.crt"), p.f("client.key"), "https://"+addr+"/debug")
		if !strings.Contains(out, "Cert validated: true") || !strings.Contains(out, "200 OK") {
			t.Errorf("%s: the crawler built on the clone was not validated:\n%s", filepath.Base(mod), out)
		}
	}

	// The page's word on proxies: HTTPS_PROXY for other hosts, ignored
	// for localhost and loopback addresses whatever NO_PROXY says, and
	// a proxy named in Proxy used for them too.
	paragraph := ""
	for _, par := range strings.Split(string(data), "\n\n") {
		if strings.Contains(par, "HTTPS_PROXY") && strings.Contains(par, "localhost") && strings.Contains(par, "loopback") && strings.Contains(par, "http.ProxyURL") {
			paragraph = par
		}
	}
	if paragraph == "" {
		t.Error("docs/go.md does not say that HTTPS_PROXY is ignored for localhost and loopback addresses, nor how to proxy them")
	}
	cp, proxyURL := testutil.StartConnectProxy(t, map[string]string{"bots.example": "127.0.0.1"})
	proxyEnv := []string{"HTTPS_PROXY=" + proxyURL.String(), "https_proxy=", "NO_PROXY=", "no_proxy="}
	fetch(proxyEnv, "https://bots.example:"+port+"/debug")
	if got := cp.Tunnels(); len(got) != 1 || got[0] != "bots.example:"+port {
		t.Fatalf("HTTPS_PROXY: tunnels %q, want bots.example:%s alone", got, port)
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		fetch(proxyEnv, "https://"+host+":"+port+"/debug")
	}
	if got := cp.Tunnels(); len(got) != 1 {
		t.Errorf("HTTPS_PROXY used for loopback hosts: tunnels %q", got)
	}
	fetch(nil, "https://localhost:"+port+"/debug", proxyURL.String())
	if got := cp.Tunnels(); len(got) != 2 || got[1] != "localhost:"+port {
		t.Errorf("Proxy: http.ProxyURL not used for localhost: tunnels %q", got)
	}
}

// TestDocsBothSides: docs/bot.md has a recipe that runs an origin, the
// gateway and the forward proxy together, each started by a block of its
// own, on loopback ports that no other part of docs/bot.md or docs/site.md
// names, so that it runs beside either page's servers (TestDocsExamples
// runs it).
func TestDocsBothSides(t *testing.T) {
	const heading = "## Both sides on one machine\n"
	bot, err := os.ReadFile("../docs/bot.md")
	if err != nil {
		t.Fatal(err)
	}
	site, err := os.ReadFile("../docs/site.md")
	if err != nil {
		t.Fatal(err)
	}
	before, section, ok := strings.Cut(string(bot), heading)
	if !ok {
		t.Fatalf("docs/bot.md: no section %q runs the gateway, an origin and the forward proxy together", strings.TrimSpace(heading))
	}
	after := ""
	if i := strings.Index(section, "\n## "); i >= 0 {
		section, after = section[:i], section[i:]
	}
	var origin, gateway, proxy bool
	for _, b := range shellBlocks(section) {
		if b.how != "background" {
			continue
		}
		switch {
		case strings.Contains(b.body, "bin/server ") && strings.Contains(b.body, "-upstream http://127.0.0.1:"):
			gateway = true
		case strings.Contains(b.body, "bin/client -listen 127.0.0.1:"):
			proxy = true
		case strings.Contains(b.body, "python3 "):
			origin = true
		}
	}
	if !origin || !gateway || !proxy {
		t.Errorf("docs/bot.md, %q: background blocks start an origin %t, the gateway %t, the forward proxy %t", strings.TrimSpace(heading), origin, gateway, proxy)
	}
	elsewhere := map[string]string{}
	for name, md := range map[string]string{"docs/bot.md": before + after, "docs/site.md": string(site)} {
		for _, m := range loopbackPort.FindAllStringSubmatch(md, -1) {
			elsewhere[m[2]] = name
		}
	}
	ports := loopbackPort.FindAllStringSubmatch(section, -1)
	if len(ports) < 3 {
		t.Errorf("docs/bot.md, %q names %d loopback ports", strings.TrimSpace(heading), len(ports))
	}
	reported := map[string]bool{}
	for _, m := range ports {
		if page := elsewhere[m[2]]; page != "" && !reported[m[2]] {
			reported[m[2]] = true
			t.Errorf("docs/bot.md, %q: port %s is also used in %s", strings.TrimSpace(heading), m[2], page)
		}
	}
}
