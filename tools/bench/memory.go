package main

// The memory comparison: what an open connection costs each TLS terminator
// in resident memory. Two kinds of connection, each held open by the
// thousands while the terminator's memory is read:
//
//   - an idle flagged HTTP/2 connection: a full TLS 1.3 handshake with the
//     client certificate, one GET answered by the origin, then nothing (a
//     crawler's connection between pages);
//   - a half-sent ClientHello: the first half of a flagged ClientHello,
//     then nothing (what a slow or hostile client leaves the server to
//     hold until its handshake timeout).
//
// Memory is the proportional set size (Pss, /proc/PID/smaps_rollup) of the
// terminator's processes summed (nginx: master and worker), read before the
// connections are opened and while they are open; the difference divided by
// their number is the cost of one. Each kind is measured on terminators
// started afresh (a Go runtime keeps the heap that closed connections
// freed, and would lend it to the next kind).

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/tlsclient"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// memoryParams sizes the comparison.
type memoryParams struct {
	idle int // idle HTTP/2 connections held at once
	half int // half-sent ClientHellos held at once
}

// memResult is one terminator's cost per connection, in bytes.
type memResult struct {
	idle, half float64
	base       int64 // its memory with no connection open
}

// treeMemory returns the proportional set size of the process and its
// children, in bytes.
func (p *proc) treeMemory() int64 { return treeSum(p, pss) }

// pss reads a process's proportional set size, or its resident set size
// where the kernel does not give the former.
func pss(pid int) int64 {
	for _, src := range []struct{ file, field string }{
		{fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:"},
		{fmt.Sprintf("/proc/%d/status", pid), "VmRSS:"},
	} {
		data, err := os.ReadFile(src.file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == src.field {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// settle waits until the terminator's memory stops moving (a Go runtime
// returning memory, a worker finishing its closes), at most a few seconds,
// and returns it.
func settle(p *proc) int64 {
	last := p.treeMemory()
	for range 20 {
		time.Sleep(250 * time.Millisecond)
		m := p.treeMemory()
		if d := m - last; d < 64<<10 && d > -64<<10 {
			return m
		}
		last = m
	}
	return last
}

// idleCost opens n idle flagged HTTP/2 connections to t (each with one
// GET answered) and returns the terminator's memory per connection.
func idleCost(t *terminator, cl *client.Client, n int, heapProfile func() error) (float64, error) {
	ctx := context.Background()
	before := settle(t.p)
	conns := make([]*client.Conn, n)
	defer func() {
		for _, cn := range conns {
			if cn != nil {
				cn.Close()
			}
		}
	}()
	err := parallel(n, 8, func(i int) error {
		cn, err := cl.Dial(ctx, t.url)
		if err != nil {
			return err
		}
		conns[i] = cn
		if err := checkHandshake(cn.Handshake); err != nil {
			return err
		}
		return gatewayGet(ctx, cl, cn, t.url)
	})
	if err != nil {
		return 0, fmt.Errorf("%s: idle connections: %w", t.name, err)
	}
	open := settle(t.p)
	// Still open: a terminator that closed idle connections would be
	// measured as holding less. One in a hundred is asked again.
	for i := 0; i < n; i += 100 {
		if err := gatewayGet(ctx, cl, conns[i], t.url); err != nil {
			return 0, fmt.Errorf("%s: idle connection %d no longer answers when measured: %w", t.name, i, err)
		}
	}
	if heapProfile != nil {
		if err := heapProfile(); err != nil {
			return 0, err
		}
	}
	return float64(open-before) / float64(n), nil
}

// halfHello returns the first half of a flagged ClientHello as this
// project's client sends it, read off a listener of the bench's own.
func halfHello() ([]byte, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		hdr := make([]byte, 5)
		if _, err := io.ReadFull(c, hdr); err != nil {
			got <- nil
			return
		}
		body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
		if _, err := io.ReadFull(c, body); err != nil {
			got <- nil
			return
		}
		got <- append(hdr, body...)
	}()
	hello := tlsclient.Hello{NextProtos: []string{"h2"}, Groups: groupIDs["X25519"], Flags: tlsflags.Must(tlsflags.RequestMTLS)}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	go hello.Dial(ctx, &net.Dialer{}, "tcp", ln.Addr().String(), &utls.Config{ServerName: "localhost", InsecureSkipVerify: true}) // only its first record is read
	rec := <-got
	if len(rec) < 10 {
		return nil, fmt.Errorf("no ClientHello captured")
	}
	return rec[:len(rec)/2], nil
}

// halfCost opens n connections to t that send half a ClientHello and
// stop, and returns the terminator's memory per connection.
func halfCost(t *terminator, half []byte, n int) (float64, error) {
	addr := t.p.addr
	before := settle(t.p)
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	err := parallel(n, 8, func(i int) error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		conns[i] = c
		_, err = c.Write(half)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: half-sent ClientHellos: %w", t.name, err)
	}
	open := settle(t.p)
	// Still open: a terminator that dropped them would be measured as
	// holding nothing.
	alive := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				alive++
			}
		}
	}
	if alive < n*9/10 {
		return 0, fmt.Errorf("%s: only %d of %d half-sent ClientHellos still open when measured", t.name, alive, n)
	}
	return float64(open-before) / float64(n), nil
}

// memoryBench runs the comparison and returns its Markdown.
func memoryBench(dir, binDir string, mp memoryParams, nginxFlag, caddyFlag, heapFile string) string {
	defer stopAll()
	env := &gatewayEnv{dir: dir, pki: makePKI(dir, "memory", false), origin: startOrigin(),
		serverBin: filepath.Join(binDir, "server"), nginx: findPeer("nginx", nginxFlag), caddy: findPeer("caddy", caddyFlag)}
	// The client keeps its idle connections open (its default closes
	// them after a second).
	cc := gatewayClientConfig(env.pki)
	cc.IdleTimeout = time.Hour
	cl, err := client.New(cc)
	check(err)
	half, err := halfHello()
	check(err)
	var ts []*terminator
	var res []memResult
	for phase := range 2 {
		env.pprofAddr = ""
		var heap func() error
		if phase == 0 && heapFile != "" {
			env.pprofAddr, err = freeAddr()
			check(err)
			heap = func() error {
				if err := fetchTo("http://"+env.pprofAddr+"/debug/pprof/heap?gc=1", heapFile); err != nil {
					return err
				}
				if err := fetchTo("http://"+env.pprofAddr+"/debug/pprof/goroutine?debug=1", heapFile+".goroutines.txt"); err != nil {
					return err
				}
				log.Printf("wrote %s (go tool pprof -sample_index inuse_space -top %s) and %s.goroutines.txt", heapFile, heapFile, heapFile)
				return nil
			}
		}
		ts, err = startTerminators(env)
		check(err)
		if res == nil {
			res = make([]memResult, len(ts))
		}
		for i, t := range ts {
			// A few requests first, so that what is set up once is
			// not counted against the connections.
			_, err := gatewayLoad(t, cl, true, 5, 1)
			check(err)
			if phase == 0 {
				res[i].base = settle(t.p)
				res[i].idle, err = idleCost(t, cl, mp.idle, heap)
				heap = nil // ours only: the first
			} else {
				res[i].half, err = halfCost(t, half, mp.half)
			}
			check(err)
			t.p.stop()
		}
	}
	for i, t := range ts {
		log.Printf("memory: %s: %.1f KiB per idle HTTP/2 connection, %.1f KiB per half-sent ClientHello (%.1f MiB with none open)",
			t.name, res[i].idle/1024, res[i].half/1024, float64(res[i].base)/(1<<20))
	}
	var md strings.Builder
	fmt.Fprintf(&md, "Memory per open connection (proportional set size of the terminator's processes, while the connections are open less before they were opened, divided by their number): %d idle flagged HTTP/2 connections held at once (TLS 1.3 with the client certificate, one GET each, then idle), and %d connections that sent half a flagged ClientHello (%d bytes) and stopped:\n\n",
		mp.idle, mp.half, len(half))
	md.WriteString("| terminator | idle HTTP/2 connection | ours ÷ this | half-sent ClientHello | ours ÷ this | memory with none open |\n|---|---|---|---|---|---|\n")
	for i, t := range ts {
		ri, rh := "—", "—"
		if i > 0 {
			ri, rh = fmt.Sprintf("%.2f", res[0].idle/res[i].idle), fmt.Sprintf("%.2f", res[0].half/res[i].half)
		}
		fmt.Fprintf(&md, "| %s | %.1f KiB | %s | %.1f KiB | %s | %.1f MiB |\n", t.name, res[i].idle/1024, ri, res[i].half/1024, rh, float64(res[i].base)/(1<<20))
	}
	md.WriteString("\n")
	for _, t := range ts {
		fmt.Fprintf(&md, "- %s: %s\n", t.name, t.conf)
	}
	fmt.Print("\n" + md.String())
	return md.String()
}

// fetchTo writes what a GET of u answers to file.
func fetchTo(u, file string) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
