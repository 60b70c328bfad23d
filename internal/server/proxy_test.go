package server

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/tlsclient"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// proxiedDebug connects to ts, writes header (if any), makes a flagged
// handshake with the valid client certificate, and GETs /debug?format=json
// over HTTP/1.1.
func proxiedDebug(t *testing.T, ts *testServer, p *testpki.PKI, header []byte) (map[string]any, error) {
	t.Helper()
	raw, err := net.Dial("tcp", ts.url.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	if header != nil {
		if _, err := raw.Write(header); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	cert, err := utls.LoadX509KeyPair(p.Clients["valid"][0], p.Clients["valid"][1])
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tlsclient.Hello{Flags: tlsflags.Must(80), NextProtos: []string{"http/1.1"}}.Client(raw,
		&utls.Config{Time: testpki.Clock, RootCAs: pool, ServerName: "127.0.0.1", Certificates: []utls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	req, _ := http.NewRequest("GET", "https://127.0.0.1/debug?format=json", nil)
	if err := req.Write(tc); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var rep map[string]any
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	return rep, nil
}

// TestProxyProtocol: from a listed balancer a PROXY header (v1 or v2) is
// required and its client address is the one reported; the ClientHello
// after it is inspected as usual. From other addresses a header is
// refused and plain TLS is served.
func TestProxyProtocol(t *testing.T) {
	p := testpki.New(t)
	v1 := []byte("PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
	h2 := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("2001:db8::9"), Port: 51000}, &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443})
	v2, err := h2.Format()
	if err != nil {
		t.Fatal(err)
	}
	listed := startServer(t, p, Config{ProxyProtocolFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	for _, tc := range []struct {
		name   string
		header []byte
		addr   string
	}{
		{"V1", v1, "203.0.113.7:40000"},
		{"V2", v2, "[2001:db8::9]:51000"},
	} {
		rep, err := proxiedDebug(t, listed, p, tc.header)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if rep["client_address"] != tc.addr || rep["cert_validated"] != true || jsonOf(rep["client_tls_flags"]) != "[80]" {
			t.Errorf("%s: address %v, validated %v, flags %v", tc.name, rep["client_address"], rep["cert_validated"], rep["client_tls_flags"])
		}
	}
	if _, err := proxiedDebug(t, listed, p, nil); err == nil {
		t.Error("a listed balancer's connection without a PROXY header was served")
	}

	unlisted := startServer(t, p, Config{ProxyProtocolFrom: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}})
	if _, err := proxiedDebug(t, unlisted, p, v1); err == nil {
		t.Error("a PROXY header from an unlisted address was accepted")
	}
	rep, err := proxiedDebug(t, unlisted, p, nil)
	if err != nil || !strings.HasPrefix(rep["client_address"].(string), "127.0.0.1:") {
		t.Errorf("plain TLS from an unlisted address: %v %v", err, rep["client_address"])
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
