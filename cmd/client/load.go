package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	reqmtls "github.com/req-mtls/req-mtls"
)

// Request is what to send, as given on the command line.
type Request struct {
	URL    *url.URL
	Method string
	Header http.Header
	Body   []byte
}

// BuildRequest returns an *http.Request for r.
func BuildRequest(r *Request) (*http.Request, error) {
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequest(r.Method, r.URL.String(), body)
	if err != nil {
		return nil, err
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			if strings.EqualFold(k, "Host") {
				req.Host = v
				continue
			}
			req.Header.Add(k, v)
		}
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "req-mtls-client/1")
	}
	return req, nil
}

// Load describes repeated requests, for operators checking a deployment.
type Load struct {
	N, Concurrency int
	// KeepAlive sends each worker's requests over one connection instead
	// of a new connection per request.
	KeepAlive bool
	// MaxBody bounds each response body read.
	MaxBody int64
}

// Latencies summarises durations.
type Latencies struct {
	Count int           `json:"count"`
	Min   time.Duration `json:"min_ns"`
	P50   time.Duration `json:"p50_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
}

func summarize(d []time.Duration) Latencies {
	if len(d) == 0 {
		return Latencies{}
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[int(p*float64(len(d)-1)+0.5)] }
	return Latencies{Count: len(d), Min: d[0], P50: q(0.50), P99: q(0.99), Max: d[len(d)-1]}
}

// Stats is the outcome of a Load.
type Stats struct {
	Requests    int            `json:"requests"`
	OK          int            `json:"ok"`
	Errors      int            `json:"errors"`
	Connections int            `json:"connections"`
	Resumed     int            `json:"resumed"`
	CertsSent   int            `json:"certificates_sent"`
	Status      map[int]int    `json:"status_codes"`
	ErrorKinds  map[string]int `json:"error_kinds,omitempty"`
	Handshake   Latencies      `json:"handshake"`
	Total       Latencies      `json:"total"`
	Elapsed     time.Duration  `json:"elapsed_ns"`
}

// Run sends l.N requests with l.Concurrency workers and summarises them. A
// response with status 400 or more counts as an error.
func Run(ctx context.Context, d *reqmtls.Dialer, r *Request, l Load) *Stats {
	l.Concurrency = max(1, min(l.Concurrency, l.N))
	var (
		mu         sync.Mutex
		st         = &Stats{Status: map[int]int{}, ErrorKinds: map[string]int{}}
		handshakes []time.Duration
		totals     []time.Duration
	)
	next := make(chan struct{})
	go func() {
		defer close(next)
		for range l.N {
			select {
			case next <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	fail := func(err error) {
		mu.Lock()
		st.Requests++
		st.Errors++
		st.ErrorKinds[err.Error()]++
		mu.Unlock()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range l.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cn *reqmtls.ClientConn
			defer func() {
				if cn != nil {
					cn.Close()
				}
			}()
			for range next {
				t0 := time.Now()
				if cn == nil {
					var err error
					if cn, err = d.Dial(ctx, r.URL); err != nil {
						fail(err)
						cn = nil
						continue
					}
					hs := cn.Handshake()
					mu.Lock()
					st.Connections++
					handshakes = append(handshakes, hs.Duration)
					if hs.Resumed {
						st.Resumed++
					}
					if hs.CertSent {
						st.CertsSent++
					}
					mu.Unlock()
				}
				req, err := BuildRequest(r)
				if err != nil {
					fail(err)
					continue
				}
				resp, _, err := do(ctx, cn, req, l.MaxBody)
				elapsed := time.Since(t0)
				if err != nil {
					fail(err)
					cn.Close()
					cn = nil
					continue
				}
				mu.Lock()
				st.Requests++
				st.Status[resp.StatusCode]++
				totals = append(totals, elapsed)
				if resp.StatusCode < 400 {
					st.OK++
				} else {
					st.Errors++
					st.ErrorKinds[fmt.Sprintf("HTTP status %d", resp.StatusCode)]++
				}
				mu.Unlock()
				if !l.KeepAlive {
					cn.Close()
					cn = nil
				}
			}
		}()
	}
	wg.Wait()
	st.Elapsed = time.Since(start)
	st.Handshake = summarize(handshakes)
	st.Total = summarize(totals)
	return st
}

// WriteText prints the stats for a person.
func (st *Stats) WriteText(w io.Writer) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/1e6) }
	rate := 0.0
	if st.Elapsed > 0 {
		rate = float64(st.Requests) / st.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "requests:    %d in %.2fs (%.1f/s), %d ok, %d errors\n", st.Requests, st.Elapsed.Seconds(), rate, st.OK, st.Errors)
	fmt.Fprintf(w, "connections: %d new, %d resumed, client certificate sent in %d handshakes (a resumed session keeps its own)\n", st.Connections, st.Resumed, st.CertsSent)
	codes := make([]int, 0, len(st.Status))
	for code := range st.Status {
		codes = append(codes, code)
	}
	sort.Ints(codes)
	for _, code := range codes {
		fmt.Fprintf(w, "status %d:  %d\n", code, st.Status[code])
	}
	for _, l := range []struct {
		name string
		v    Latencies
	}{{"handshake", st.Handshake}, {"total", st.Total}} {
		if l.v.Count > 0 {
			fmt.Fprintf(w, "%-10s   min %s  p50 %s  p99 %s  max %s  (n=%d)\n", l.name+":", ms(l.v.Min), ms(l.v.P50), ms(l.v.P99), ms(l.v.Max), l.v.Count)
		}
	}
	kinds := make([]string, 0, len(st.ErrorKinds))
	for k := range st.ErrorKinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "error:       %dx %s\n", st.ErrorKinds[k], k)
	}
}

// do sends req on cn and reads the response body, at most maxBody bytes.
func do(ctx context.Context, cn *reqmtls.ClientConn, req *http.Request, maxBody int64) (*http.Response, []byte, error) {
	resp, err := cn.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp, body, fmt.Errorf("read response: %w", err)
	}
	return resp, body, nil
}
