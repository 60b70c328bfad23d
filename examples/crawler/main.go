// Command crawler fetches a list of URLs as a request-mTLS bot: flag 80 in
// every ClientHello, its certificate sent when a site asks for it. It
// fetches concurrently, a few connections per host at most, through the
// proxy the environment names (HTTPS_PROXY, NO_PROXY), and prints for each
// URL its status and whether the site asked for the certificate.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	reqmtls "github.com/req-mtls/req-mtls"
)

func main() {
	certFile := flag.String("cert", "client.crt", "client certificate (PEM)")
	keyFile := flag.String("key", "client.key", "client key (PEM)")
	caFile := flag.String("cacert", "", "roots for sites (PEM); empty for the system roots")
	list := flag.String("list", "", "a file of URLs, one a line (# comments), besides the arguments")
	workers := flag.Int("c", 8, "URLs fetched at once")
	perHost := flag.Int("per-host", 2, "connections to one host at most")
	noFlag := flag.Bool("no-flag", false, "send no TLS flags, as a browser does")
	body := flag.Bool("body", false, "print each response's body after its line")
	flag.Parse()
	urls, err := readURLs(*list, flag.Args())
	check(err)
	if len(urls) == 0 || *workers < 1 || *perHost < 1 {
		fmt.Fprintln(os.Stderr, "usage: crawler [-cert FILE -key FILE] [-cacert FILE] [-list FILE] [-c N] [-per-host N] [-no-flag] [-body] URL...")
		os.Exit(2)
	}

	// Which hosts asked for the certificate: each handshake says.
	var mu sync.Mutex
	asked := map[string]reqmtls.Handshake{}
	cfg := reqmtls.ClientConfig{Flags: reqmtls.RequestMTLSFlags, CertFile: *certFile, KeyFile: *keyFile,
		MaxConnsPerHost: *perHost,
		OnHandshake: func(addr string, h reqmtls.Handshake) {
			mu.Lock()
			defer mu.Unlock()
			if prev, ok := asked[addr]; ok && h.Resumed {
				h.CertRequested, h.CertSent = prev.CertRequested, prev.CertSent // a resumed session keeps its identity
			}
			asked[addr] = h
		}}
	if *noFlag {
		cfg.Flags = reqmtls.Flags{}
	}
	if *caFile != "" {
		cfg.RootCAs, err = reqmtls.LoadCertPool(*caFile)
		check(err)
	}
	t, err := reqmtls.NewTransport(cfg)
	check(err)
	client := &http.Client{Transport: t, Timeout: time.Minute}

	jobs := make(chan string)
	var wg sync.WaitGroup
	var out sync.Mutex
	failed := false
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range jobs {
				line, text, err := fetch(client, u, *body)
				mu.Lock()
				h, ok := asked[hostPort(u)]
				mu.Unlock()
				out.Lock()
				if err != nil {
					failed = true
					fmt.Printf("%s error: %s\n", u, explain(err))
				} else {
					fmt.Printf("%s %s, certificate requested: %t, sent: %t\n%s", u, line, ok && h.CertRequested, ok && h.CertSent, text)
				}
				out.Unlock()
			}
		}()
	}
	for _, u := range urls {
		jobs <- u
	}
	close(jobs)
	wg.Wait()
	if failed {
		os.Exit(1)
	}
}

// fetch gets u and returns its status line and, with body, the body.
func fetch(c *http.Client, u string, body bool) (string, string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", "", err
	}
	if !body {
		return resp.Status, "", nil
	}
	return resp.Status, string(b), nil
}

// readURLs returns the URLs of the file (if any) and of args.
func readURLs(file string, args []string) ([]string, error) {
	urls := append([]string(nil), args...)
	if file == "" {
		return urls, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			urls = append(urls, l)
		}
	}
	return urls, sc.Err()
}

// hostPort is how the Transport names a URL's host in OnHandshake.
func hostPort(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// explain says what went wrong, with the TLS alert's name when the server
// sent one.
func explain(err error) string {
	msg := err.Error()
	var e *reqmtls.Error
	if errors.As(err, &e) {
		msg = e.Msg
		if e.Alert != "" && !strings.Contains(msg, e.Alert) {
			msg += " (TLS alert " + e.Alert + ")"
		}
	}
	return msg
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "crawler:", explain(err))
		os.Exit(1)
	}
}
