// Package e2e drives the built binaries (server, client, gencert) together,
// as a user would: testscript scripts in testdata/script, and tests against
// real third-party peers (curl, openssl, tshark, Chromium) in peers_test.go.
//
// The scripts live here rather than under each cmd/ because every one of
// them runs more than one of the binaries.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"go.uber.org/goleak"
)

// binDir holds the binaries built for this test run.
var binDir string

// buildFlags are go build's flags for the binaries: -race when the tests
// run under the race detector (race_test.go), so that the binaries they
// drive are checked too.
var buildFlags []string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "req-mtls-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", slices.Concat([]string{"build"}, buildFlags, []string{"-o", dir + string(os.PathSeparator), "../cmd/..."})...)
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	// No goroutine a test started may outlive the tests.
	if err := goleak.Find(); code == 0 && err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", binDir+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Values[runningKey{}] = &slot{}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"startserver": cmdStartServer,
			"stopserver":  cmdStopServer,
			"signal":      cmdSignal,
			"waitlog":     cmdWaitLog,
			"mode":        cmdMode,
			"replace":     cmdReplace,
			"stalledfifo": cmdStalledFIFO,
		},
	})
}

type running struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan error
}

var listening = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startserver [args...] starts the server binary on a free loopback port
// (unless args give -listen-addr), waits until it listens, and sets $ADDR.
// Its stderr goes to server.log in the work directory.
func cmdStartServer(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! startserver")
	}
	if !contains(args, "-listen-addr") && !contains(args, "-config") {
		args = append(args, "-listen-addr", "127.0.0.1:0")
	}
	logf, err := os.Create(ts.MkAbs("server.log"))
	ts.Check(err)
	cmd := exec.Command(filepath.Join(binDir, "server"), args...)
	cmd.Dir = ts.Getenv("WORK")
	cmd.Env = append(os.Environ(), "SSLKEYLOGFILE="+ts.Getenv("SSLKEYLOGFILE"))
	cmd.Stderr = logf
	ts.Check(cmd.Start())
	r := &running{cmd: cmd, log: logf, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	ts.Defer(func() {
		cmd.Process.Kill()
		<-r.done
		logf.Close()
	})
	ts.Value(runningKey{}).(*slot).r = r
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		data, _ := os.ReadFile(logf.Name())
		if m := listening.FindSubmatch(data); m != nil {
			ts.Setenv("ADDR", string(m[1]))
			return
		}
		select {
		case err := <-r.done:
			r.done <- err
			ts.Fatalf("server exited: %v\n%s", err, data)
		default:
		}
	}
	ts.Fatalf("server did not start listening")
}

type runningKey struct{}

// slot holds a script's running server.
type slot struct{ r *running }

func server(ts *testscript.TestScript) *running {
	r := ts.Value(runningKey{}).(*slot).r
	if r == nil {
		ts.Fatalf("no server started")
	}
	return r
}

// stopserver sends SIGTERM and waits for a clean exit.
func cmdStopServer(ts *testscript.TestScript, neg bool, args []string) {
	r := server(ts)
	ts.Check(r.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil && !neg {
			ts.Fatalf("server exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		ts.Fatalf("server did not stop")
	}
}

// signal NAME sends a signal (HUP) to the server.
func cmdSignal(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 || args[0] != "HUP" {
		ts.Fatalf("usage: signal HUP")
	}
	ts.Check(server(ts).cmd.Process.Signal(syscall.SIGHUP))
}

// waitlog [-count N] REGEXP waits until server.log matches REGEXP (N times).
func cmdWaitLog(ts *testscript.TestScript, neg bool, args []string) {
	n := 1
	if len(args) == 3 && args[0] == "-count" {
		fmt.Sscan(args[1], &n)
		args = args[2:]
	}
	if len(args) != 1 {
		ts.Fatalf("usage: waitlog [-count N] REGEXP")
	}
	re := regexp.MustCompile(args[0])
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		data, _ := os.ReadFile(ts.MkAbs("server.log"))
		if len(re.FindAll(data, -1)) >= n {
			return
		}
	}
	data, _ := os.ReadFile(ts.MkAbs("server.log"))
	ts.Fatalf("server.log never matched %q %d times:\n%s", args[0], n, data)
}

// mode PERM FILE... checks file permissions.
func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	if runtime.GOOS == "windows" {
		return
	}
	for _, f := range args[1:] {
		fi, err := os.Stat(ts.MkAbs(f))
		ts.Check(err)
		if got := fmt.Sprintf("%04o", fi.Mode().Perm()); got != args[0] {
			ts.Fatalf("%s: mode %s, want %s", f, got, args[0])
		}
	}
}

// replace SRC DST writes SRC's contents to a temporary file and renames it
// over DST, as certificate tools do.
func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	data, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	tmp := ts.MkAbs(args[1] + ".new")
	ts.Check(os.WriteFile(tmp, data, 0o600))
	ts.Check(os.Rename(tmp, ts.MkAbs(args[1])))
}

// stalledfifo NAME makes a FIFO and opens it for reading until the script
// ends, reading nothing: once the pipe is full, a writer's writes wait.
func cmdStalledFIFO(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: stalledfifo NAME")
	}
	path := ts.MkAbs(args[0])
	ts.Check(syscall.Mkfifo(path, 0o600))
	// Non-blocking: opening waits for no writer.
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	ts.Check(err)
	ts.Defer(func() { r.Close() })
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s || strings.HasPrefix(x, s+"=") {
			return true
		}
	}
	return false
}
