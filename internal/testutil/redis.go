package testutil

import (
	"bufio"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// RedisServer is a redis-server process on a loopback port, for tests.
type RedisServer struct {
	// Addr is its host:port, the same across Stop and Start.
	Addr string
	// URL is redis://Addr (rediss://localhost:PORT over TLS).
	URL string
	// Dir is its working directory.
	Dir string

	t    testing.TB
	bin  string
	cmd  *exec.Cmd
	args []string // after the port's
	tls  bool
}

// redisServer finds Debian's redis-server. Without it the test is skipped,
// or fails when REQ_MTLS_REQUIRE_PEERS is set (as CI sets it).
func redisServer(t testing.TB) *RedisServer {
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
	s := &RedisServer{Addr: addr, URL: "redis://" + addr, Dir: t.TempDir(), t: t, bin: bin}
	t.Cleanup(s.Stop)
	return s
}

// StartRedis runs Debian's redis-server on a free loopback port, without
// persistence, and waits until it answers PING; it is killed when the test
// ends. Without redis-server the test is skipped, or fails when
// REQ_MTLS_REQUIRE_PEERS is set (as CI sets it). args are added to its
// command line.
func StartRedis(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	s := redisServer(t)
	s.args = args
	s.Start()
	return s
}

// StartRedisTLS is StartRedis serving TLS alone, with this certificate and
// key (PEM files), asking clients for none; its URL is
// rediss://localhost:PORT.
func StartRedisTLS(t testing.TB, cert, key string) *RedisServer {
	t.Helper()
	s := redisServer(t)
	s.tls, s.URL = true, "rediss://localhost:"+s.port()
	s.args = []string{"--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "no"}
	s.Start()
	return s
}

// StartSentinel runs redis-server as a Sentinel monitoring the master at
// masterAddr under name, and waits until it answers PING.
func StartSentinel(t testing.TB, masterAddr, name string) *RedisServer {
	t.Helper()
	s := redisServer(t)
	host, port, _ := net.SplitHostPort(masterAddr)
	conf := filepath.Join(s.Dir, "sentinel.conf")
	// A Sentinel rewrites its file: it must be its own and writable.
	if err := os.WriteFile(conf, []byte("sentinel monitor "+name+" "+host+" "+port+" 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.args = []string{"--sentinel"}
	s.Start(conf)
	return s
}

func (s *RedisServer) port() string { _, p, _ := net.SplitHostPort(s.Addr); return p }

// Start starts the server again on its address after Stop; conf, for a
// Sentinel, is its configuration file.
func (s *RedisServer) Start(conf ...string) {
	s.t.Helper()
	args := slices.Clone(conf)
	if s.tls {
		args = append(args, "--port", "0", "--tls-port", s.port())
	} else {
		args = append(args, "--port", s.port())
	}
	args = append(args, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.Dir, "--logfile", filepath.Join(s.Dir, "redis.log"))
	s.cmd = exec.Command(s.bin, append(args, s.args...)...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if s.ping() {
			return
		}
	}
	log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
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
	if s.tls {
		// Only whether it is up: the tests check its certificate.
		c = tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.HasPrefix(line, "+PONG")
}
