package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/req-mtls/req-mtls/internal/clienthello"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

type connKey struct{}

// withConn is http.Server.ConnContext: it remembers the connection so that
// handlers can reach the ClientHello inspection under the TLS layer.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// Report is what /debug tells a client about its own connection.
type Report struct {
	ClientFlags    tlsflags.Set `json:"client_tls_flags"`
	MutualFlags    tlsflags.Set `json:"mutually_supported_tls_flags"`
	FlagsCodepoint string       `json:"tls_flags_codepoint,omitempty"`
	CertRequested  bool         `json:"client_cert_requested"`
	CertReceived   bool         `json:"peer_certificate_received"`
	CertName       string       `json:"cert_received,omitempty"`
	CertValidated  *bool        `json:"cert_validated,omitempty"`
	VerifyError    string       `json:"verify_error,omitempty"`

	Policy      string               `json:"client_auth_policy"`
	TLSVersion  string               `json:"tls_version"`
	CipherSuite string               `json:"cipher_suite"`
	ALPN        string               `json:"alpn"`
	SNI         string               `json:"sni"`
	Resumed     bool                 `json:"resumed"`
	KeyExchange string               `json:"key_exchange"`
	HelloRetry  bool                 `json:"hello_retry_request"`
	ClientHello *clienthello.Summary `json:"client_hello,omitempty"`
	PeerChain   []CertInfo           `json:"peer_chain,omitempty"`
}

// CertInfo describes one certificate of the client's chain.
type CertInfo struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	DNSNames  []string  `json:"dns_names,omitempty"`
	IPs       []string  `json:"ip_addresses,omitempty"`
	URIs      []string  `json:"uris,omitempty"`
	Emails    []string  `json:"emails,omitempty"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	SHA256    string    `json:"sha256"`
}

func certInfo(c *x509.Certificate) CertInfo {
	sum := sha256.Sum256(c.Raw)
	ci := CertInfo{
		Subject:   c.Subject.String(),
		Issuer:    c.Issuer.String(),
		DNSNames:  c.DNSNames,
		Emails:    c.EmailAddresses,
		Serial:    c.SerialNumber.Text(16),
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		SHA256:    hex.EncodeToString(sum[:]),
	}
	for _, ip := range c.IPAddresses {
		ci.IPs = append(ci.IPs, ip.String())
	}
	for _, u := range c.URIs {
		ci.URIs = append(ci.URIs, u.String())
	}
	return ci
}

// report builds the Report for the connection behind ctx.
func (s *Server) report(ctx context.Context, cs *tls.ConnectionState) *Report {
	r := &Report{Policy: s.cfg.Policy.String()}
	var hc *clienthello.Conn
	if c, ok := ctx.Value(connKey{}).(*tls.Conn); ok {
		hc, _ = c.NetConn().(*clienthello.Conn)
	}
	isFlagged := false
	if hc != nil {
		r.ClientFlags = hc.Flags()
		r.MutualFlags = r.ClientFlags.Intersect(Supported)
		if cp := hc.FlagsCodepoint(); cp != 0 {
			r.FlagsCodepoint = fmt.Sprintf("0x%04x", cp)
		}
		r.ClientHello = hc.Summary()
		isFlagged = flagged(hc)
	}
	if cs == nil {
		return r
	}
	r.TLSVersion = tls.VersionName(cs.Version)
	r.CipherSuite = tls.CipherSuiteName(cs.CipherSuite)
	r.ALPN = cs.NegotiatedProtocol
	r.SNI = cs.ServerName
	r.Resumed = cs.DidResume
	r.KeyExchange = cs.CurveID.String()
	r.HelloRetry = cs.HelloRetryRequest
	// With a PSK no CertificateRequest is sent (RFC 8446, Section 4.3.2); a
	// resumed session brings the certificate of the one it resumes.
	r.CertRequested = s.cfg.Policy.asks(isFlagged) && !cs.DidResume
	r.CertReceived = len(cs.PeerCertificates) > 0
	if !r.CertReceived {
		return r
	}
	leaf := cs.PeerCertificates[0]
	r.CertName = "(no DNS name)"
	if len(leaf.DNSNames) > 0 {
		r.CertName = leaf.DNSNames[0]
	}
	err := ValidateClientCert(cs.PeerCertificates, s.state.Load().roots(isFlagged), s.cfg.Now())
	ok := err == nil
	r.CertValidated = &ok
	if err != nil {
		r.VerifyError = err.Error()
	}
	for _, c := range cs.PeerCertificates {
		r.PeerChain = append(r.PeerChain, certInfo(c))
	}
	return r
}

// WriteText writes the report as the reference server's /debug lines.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Client sent TLS Flags: %v\n", r.ClientFlags)
	fmt.Fprintf(&b, "Mutually supported TLS Flags: %v\n", r.MutualFlags)
	fmt.Fprintf(&b, "Client cert requested: %t\n", r.CertRequested)
	fmt.Fprintf(&b, "Peer certificate received: %t\n", r.CertReceived)
	if r.CertReceived {
		fmt.Fprintf(&b, "Cert received: %s\n", r.CertName)
		fmt.Fprintf(&b, "Cert validated: %t\n", r.CertValidated != nil && *r.CertValidated)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
