package client

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/req-mtls/req-mtls/internal/safetext"
)

// ProxyFor returns the proxy for requests to u, from Config.Proxy: nil for
// a direct connection.
func (c *Client) ProxyFor(u *url.URL) (*url.URL, error) {
	return c.ProxyForRequest(&http.Request{Method: "GET", URL: u, Header: http.Header{}, Host: u.Host})
}

// ProxyForRequest returns the proxy for req, from Config.Proxy: nil for a
// direct connection.
func (c *Client) ProxyForRequest(req *http.Request) (*url.URL, error) {
	if c.cfg.Proxy == nil {
		return nil, nil
	}
	u := req.URL
	p, err := c.cfg.Proxy(req)
	if err != nil {
		return nil, &Error{Err: err, Msg: "choose a proxy for " + u.Host + ": " + err.Error()}
	}
	if p != nil && p.Scheme != "http" {
		return nil, &Error{Msg: fmt.Sprintf("proxy %s: scheme %q is not supported (want http://HOST:PORT)", p.Redacted(), p.Scheme)}
	}
	return p, nil
}

// dialTunnel connects to addr through the HTTP proxy p with CONNECT
// (RFC 9110, Section 9.3.6), authenticating with p's user info when it has
// some, and returns the tunnel. The TLS handshake then runs inside it as on
// a direct connection.
func (c *Client) dialTunnel(ctx context.Context, p *url.URL, addr string) (net.Conn, error) {
	proxyAddr := p.Host
	if p.Port() == "" {
		proxyAddr = net.JoinHostPort(p.Hostname(), "80")
	}
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", proxyAddr)
	if err != nil {
		return nil, err
	}
	req := &http.Request{Method: "CONNECT", URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := p.User; u != nil {
		pass, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass)))
	}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	br := bufio.NewReader(raw)
	err = req.Write(raw)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(br, req)
	}
	if err != nil {
		raw.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	// (A 2xx answer to CONNECT has no body, whatever its fields say,
	// RFC 9110, Section 9.3.6: the tunnel starts right after it.)
	if resp.StatusCode/100 != 2 {
		resp.Body.Close()
		raw.Close()
		// The status line is the proxy's to choose: escaped, so that no
		// control character of it reaches a terminal or a log raw.
		return nil, &Error{Msg: fmt.Sprintf("proxy %s refused CONNECT %s: %s", p.Redacted(), addr, safetext.Escape(resp.Status)),
			Err:  errProxyRefused,
			Hint: proxyHint(resp.StatusCode)}
	}
	raw.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		// Nothing should come before our ClientHello, but what did is
		// the server's, and read first.
		return &bufferedConn{Conn: raw, r: br}, nil
	}
	return raw, nil
}

var errProxyRefused = errors.New("proxy refused the tunnel")

func proxyHint(status int) string {
	switch status {
	case http.StatusProxyAuthRequired, http.StatusUnauthorized:
		return "the proxy wants credentials: put them in the proxy URL, http://USER:PASSWORD@HOST:PORT"
	case http.StatusForbidden:
		return "the proxy does not allow tunnels to that host or port"
	}
	return ""
}

// bufferedConn reads what a bufio.Reader holds before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
