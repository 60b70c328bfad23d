package testutil

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RedisServer is a redis-server process on a loopback port, for tests.
type RedisServer struct {
	// Addr is its host:port, the same across Stop and Start.
	Addr string
	// URL is redis://Addr.
	URL string

	t    testing.TB
	bin  string
	dir  string
	cmd  *exec.Cmd
	args []string
}

// StartRedis runs Debian's redis-server on a free loopback port, without
// persistence, and waits until it answers PING; it is killed when the test
// ends. Without redis-server the test is skipped, or fails when
// REQ_MTLS_REQUIRE_PEERS is set (as CI sets it). args are added to its
// command line.
func StartRedis(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("REQ_MTLS_REQUIRE_PEERS") != "" {
			t.Fatalf("peer redis-server not installed, and REQ_MTLS_REQUIRE_PEERS is set")
		}
		t.Skipf("SKIP: peer redis-server not installed (Debian package redis-server)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &RedisServer{Addr: addr, URL: "redis://" + addr, t: t, bin: bin, dir: t.TempDir(), args: args}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server again on its address after Stop.
func (s *RedisServer) Start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	args := append([]string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if s.ping() {
			return
		}
	}
	log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	s.t.Fatalf("redis-server on %s does not answer PING:\n%s", s.Addr, log)
}

// Stop kills the server (SIGKILL: no goodbye to its clients) and waits
// for it to exit.
func (s *RedisServer) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

func (s *RedisServer) ping() bool {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.HasPrefix(line, "+PONG")
}
