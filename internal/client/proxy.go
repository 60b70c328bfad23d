package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/req-mtls/req-mtls/internal/safetext"
)

// ProxyFor returns the proxy for requests to u, from Config.Proxy: nil for
// a direct connection.
func (c *Client) ProxyFor(u *url.URL) (*url.URL, error) {
	return c.ProxyForRequest(&http.Request{Method: "GET", URL: u, Header: http.Header{}, Host: u.Host})
}

// ProxyForRequest returns the proxy for req, from Config.Proxy: nil for a
// direct connection. The schemes are http.Transport.Proxy's: http, https
// (TLS to the proxy), socks5 and socks5h (both send the host's name; the
// proxy resolves it).
func (c *Client) ProxyForRequest(req *http.Request) (*url.URL, error) {
	if c.cfg.Proxy == nil {
		return nil, nil
	}
	u := req.URL
	p, err := c.cfg.Proxy(req)
	if err != nil {
		return nil, &Error{Err: err, Msg: "choose a proxy for " + u.Host + ": " + err.Error()}
	}
	if p == nil {
		return nil, nil
	}
	switch p.Scheme {
	case "http", "https", "socks5", "socks5h":
	default:
		return nil, &Error{Msg: fmt.Sprintf("proxy %s: scheme %q is not supported (want http, https, socks5 or socks5h)", p.Redacted(), p.Scheme)}
	}
	if p.Hostname() == "" {
		return nil, &Error{Msg: fmt.Sprintf("proxy %q: no host", p.Redacted())}
	}
	return p, nil
}

// proxyAddr is the host:port of proxy p, its scheme's port by default.
func proxyAddr(p *url.URL) string {
	if p.Port() != "" {
		return p.Host
	}
	port := map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[p.Scheme]
	return net.JoinHostPort(p.Hostname(), port)
}

// dialTunnel connects to addr through proxy p and returns the tunnel: with
// CONNECT (RFC 9110, Section 9.3.6) for an http or https proxy (over TLS to
// the proxy for https), with SOCKS5 (RFC 1928) otherwise, authenticating
// with p's user info when it has some. The TLS handshake then runs inside
// the tunnel as on a direct connection.
func (c *Client) dialTunnel(ctx context.Context, p *url.URL, addr string) (net.Conn, error) {
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", proxyAddr(p))
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	var conn net.Conn
	switch p.Scheme {
	case "socks5", "socks5h":
		conn, err = socks5Connect(raw, p, addr)
	case "https":
		conn, err = c.proxyTLS(ctx, raw, p)
		if err == nil {
			conn, err = httpConnect(conn, p, addr)
		}
	default:
		conn, err = httpConnect(raw, p, addr)
	}
	if !stop() && err == nil {
		err = ctx.Err() // the deadline is cut: the tunnel is no use
	}
	if err != nil {
		raw.Close()
		var e *Error
		if ctx.Err() != nil && !errors.As(err, &e) {
			err = ctx.Err()
		}
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	return conn, nil
}

// proxyTLS runs the TLS handshake with an https proxy, verified as
// servers are (RootCAs, Time, InsecureSkipVerify) for the proxy's host
// name. It is a plain handshake: flags and client certificates are for
// the site, inside the tunnel.
func (c *Client) proxyTLS(ctx context.Context, raw net.Conn, p *url.URL) (net.Conn, error) {
	tc := tls.Client(raw, &tls.Config{ServerName: p.Hostname(), RootCAs: c.cfg.RootCAs, Time: c.cfg.Time,
		InsecureSkipVerify: c.cfg.InsecureSkipVerify, NextProtos: []string{"http/1.1"}})
	if err := tc.HandshakeContext(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		e := &Error{Err: err, Msg: fmt.Sprintf("proxy %s: TLS handshake: %v", p.Redacted(), err)}
		var unknownCA x509.UnknownAuthorityError
		if errors.As(err, &unknownCA) {
			e.Hint = "the proxy's certificate is verified as servers' are: put its root in RootCAs"
		}
		return nil, e
	}
	return tc, nil
}

// httpConnect asks the HTTP proxy p, over conn, for a tunnel to addr.
func httpConnect(conn net.Conn, p *url.URL, addr string) (net.Conn, error) {
	req := &http.Request{Method: "CONNECT", URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if u := p.User; u != nil {
		pass, _ := u.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass)))
	}
	br := bufio.NewReader(conn)
	err := req.Write(conn)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(br, req)
	}
	if err != nil {
		return nil, fmt.Errorf("CONNECT: %w", err)
	}
	// (A 2xx answer to CONNECT has no body, whatever its fields say,
	// RFC 9110, Section 9.3.6: the tunnel starts right after it.)
	if resp.StatusCode/100 != 2 {
		resp.Body.Close()
		// The status line is the proxy's to choose: escaped, so that no
		// control character of it reaches a terminal or a log raw.
		return nil, &Error{Msg: fmt.Sprintf("proxy %s refused CONNECT %s: %s", p.Redacted(), addr, safetext.Escape(resp.Status)),
			Err:  errProxyRefused,
			Hint: proxyHint(resp.StatusCode)}
	}
	if br.Buffered() > 0 {
		// Nothing should come before our ClientHello, but what did is
		// the server's, and read first.
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

// socks5Connect asks the SOCKS5 proxy p, over conn, for a connection to
// addr, named as given (RFC 1928, Section 4: a domain name, or an IP
// address), with the username and password of p's user info
// (RFC 1929) when it has some.
func socks5Connect(conn net.Conn, p *url.URL, addr string) (net.Conn, error) {
	refused := func(format string, a ...any) error {
		return &Error{Msg: fmt.Sprintf("proxy %s refused the tunnel to %s: ", p.Redacted(), addr) + fmt.Sprintf(format, a...),
			Err: errProxyRefused}
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("address %q: bad port", addr)
	}
	// RFC 1928, Section 3: version 5, the methods we offer.
	method := byte(0x00) // no authentication
	if p.User != nil {
		method = 0x02 // username/password, RFC 1929
	}
	if _, err := conn.Write([]byte{5, 1, method}); err != nil {
		return nil, fmt.Errorf("SOCKS5: %w", err)
	}
	var b [2]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return nil, fmt.Errorf("SOCKS5: %w", err)
	}
	if b[0] != 5 {
		return nil, fmt.Errorf("SOCKS5: the proxy answered version %d", b[0])
	}
	if b[1] != method {
		if p.User == nil {
			return nil, &Error{Msg: fmt.Sprintf("proxy %s wants credentials", p.Redacted()), Err: errProxyRefused, Hint: proxyHint(http.StatusProxyAuthRequired)}
		}
		return nil, refused("it takes no username and password")
	}
	if p.User != nil {
		// RFC 1929, Section 2: version 1, the username, the password.
		user := p.User.Username()
		pass, _ := p.User.Password()
		if len(user) == 0 || len(user) > 255 || len(pass) > 255 {
			return nil, &Error{Msg: fmt.Sprintf("proxy %s: a SOCKS5 username is 1 to 255 bytes, a password at most 255", p.Redacted())}
		}
		msg := append([]byte{1, byte(len(user))}, user...)
		msg = append(append(msg, byte(len(pass))), pass...)
		if _, err := conn.Write(msg); err != nil {
			return nil, fmt.Errorf("SOCKS5: %w", err)
		}
		if _, err := io.ReadFull(conn, b[:]); err != nil {
			return nil, fmt.Errorf("SOCKS5: %w", err)
		}
		if b[1] != 0 {
			return nil, &Error{Msg: fmt.Sprintf("proxy %s refused the username and password", p.Redacted()), Err: errProxyRefused, Hint: proxyHint(http.StatusProxyAuthRequired)}
		}
	}
	// RFC 1928, Section 4: CONNECT to an address of type IPv4 (1),
	// domain name (3) or IPv6 (4).
	req := []byte{5, 1, 0}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
		req = append(append(req, 1), ip.AsSlice()...)
	} else if err == nil {
		a := ip.As16()
		req = append(append(req, 4), a[:]...)
	} else if len(host) > 255 {
		return nil, fmt.Errorf("SOCKS5: host name %q is longer than 255 bytes", host)
	} else {
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := conn.Write(req); err != nil {
		return nil, fmt.Errorf("SOCKS5: %w", err)
	}
	// The reply: version, status, reserved, then the bound address,
	// which we read past.
	var head [4]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return nil, fmt.Errorf("SOCKS5: %w", err)
	}
	if head[1] != 0 {
		return nil, refused("%s", socksReply(head[1]))
	}
	var skip int
	switch head[3] {
	case 1:
		skip = 4 + 2
	case 4:
		skip = 16 + 2
	case 3:
		if _, err := io.ReadFull(conn, b[:1]); err != nil {
			return nil, fmt.Errorf("SOCKS5: %w", err)
		}
		skip = int(b[0]) + 2
	default:
		return nil, fmt.Errorf("SOCKS5: the proxy answered address type %d", head[3])
	}
	if _, err := io.ReadFull(conn, make([]byte, skip)); err != nil {
		return nil, fmt.Errorf("SOCKS5: %w", err)
	}
	return conn, nil
}

// socksReply names a SOCKS5 reply code (RFC 1928, Section 6).
func socksReply(code byte) string {
	names := []string{1: "general SOCKS server failure", 2: "connection not allowed by ruleset", 3: "network unreachable",
		4: "host unreachable", 5: "connection refused", 6: "TTL expired", 7: "command not supported", 8: "address type not supported"}
	if int(code) < len(names) {
		return names[code]
	}
	return fmt.Sprintf("reply %d", code)
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
