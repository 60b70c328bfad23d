package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/clienthello"
	"github.com/req-mtls/req-mtls/internal/gateway"
	"github.com/req-mtls/req-mtls/internal/safetext"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

type connKey struct{}

// ConnContext is for http.Server.ConnContext: it remembers the connection
// so that handlers can reach the ClientHello inspection and the decision
// under the TLS layer.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
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
	TrustStore     string       `json:"trust_store,omitempty"`
	CertAgent      string       `json:"cert_agent,omitempty"` // the trusted agent that vouched for the certificate (store agent)
	ValidatesNow   *bool        `json:"cert_validates_now,omitempty"`

	Policy      string               `json:"client_auth_policy"`
	ClientAddr  string               `json:"client_address"`
	TLSVersion  string               `json:"tls_version"`
	CipherSuite string               `json:"cipher_suite"`
	ALPN        string               `json:"alpn"`
	SNI         string               `json:"sni"`
	Resumed     bool                 `json:"resumed"`
	KeyExchange string               `json:"key_exchange"`
	HelloRetry  bool                 `json:"hello_retry_request"`
	ClientHello *clienthello.Summary `json:"client_hello,omitempty"`
	PeerChain   []CertInfo           `json:"peer_chain,omitempty"`
	// WebBotAuth is the verdict on the request's Web Bot Auth signature,
	// when the server verifies them.
	WebBotAuth *WebBotAuthReport `json:"web_bot_auth,omitempty"`
}

// WebBotAuthReport is the signature verdict in /debug's JSON, with
// whether the certificate and the signature name the same bot.
type WebBotAuthReport struct {
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Agent   string `json:"agent,omitempty"`
	KeyID   string `json:"keyid,omitempty"`
	SameBot *bool  `json:"same_bot_as_certificate,omitempty"`
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
		Subject:   safetext.Escape(c.Subject.String()),
		Issuer:    safetext.Escape(c.Issuer.String()),
		DNSNames:  safetext.EscapeAll(c.DNSNames),
		Emails:    safetext.EscapeAll(c.EmailAddresses),
		Serial:    c.SerialNumber.Text(16),
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		SHA256:    hex.EncodeToString(sum[:]),
	}
	for _, ip := range c.IPAddresses {
		ci.IPs = append(ci.IPs, ip.String())
	}
	for _, u := range c.URIs {
		ci.URIs = append(ci.URIs, safetext.Escape(u.String()))
	}
	return ci
}

// connOf returns the connection under an HTTP request's context, as
// ConnContext stored it.
func connOf(ctx context.Context) *auth.Conn {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	if c == nil {
		return nil
	}
	return auth.ConnOf(c)
}

// ConnOf returns the connection behind an HTTP request, for servers whose
// http.Server.ConnContext is ConnContext; nil otherwise.
func ConnOf(r *http.Request) *auth.Conn { return connOf(r.Context()) }

// NewReport builds the Report for the connection behind an HTTP request
// from the decision its handshake recorded.
func NewReport(a *auth.Authenticator, req *http.Request) *Report {
	r := &Report{Policy: a.Policy().String(), ClientAddr: req.RemoteAddr}
	c := ConnOf(req)
	if res, ok := webbotauth.ResultOf(req); ok {
		w := &WebBotAuthReport{Status: res.Status, Reason: safetext.Escape(res.Reason), Agent: safetext.Escape(res.Agent), KeyID: res.KeyID}
		if c != nil && res.Status == "valid" {
			if d := c.Decision(); d != nil && d.Validated() {
				same := gateway.SameAgent(d, res.Agent)
				w.SameBot = &same
			}
		}
		r.WebBotAuth = w
	}
	cs := req.TLS
	if c != nil {
		r.ClientFlags = c.Flags()
		r.MutualFlags = r.ClientFlags.Intersect(Supported)
		if cp := c.FlagsCodepoint(); cp != 0 {
			r.FlagsCodepoint = fmt.Sprintf("0x%04x", cp)
		}
		r.ClientHello = c.Summary()
	}
	if cs == nil {
		return r
	}
	r.TLSVersion = tls.VersionName(cs.Version)
	r.CipherSuite = tls.CipherSuiteName(cs.CipherSuite)
	r.ALPN = cs.NegotiatedProtocol
	r.SNI = safetext.Escape(cs.ServerName)
	r.Resumed = cs.DidResume
	r.KeyExchange = cs.CurveID.String()
	r.HelloRetry = cs.HelloRetryRequest
	var d *auth.Decision
	if c != nil {
		d = c.Decision()
	}
	if d == nil {
		return r
	}
	r.fillDecision(d)
	if r.CertReceived {
		// The handshake's decision stands for the connection; whether
		// the certificate would still validate against the stores in
		// force now is reported beside it (it differs after a reload
		// under request; under the enforcing policies such a connection
		// is closed).
		now := a.ValidatesNow(d)
		r.ValidatesNow = &now
	}
	return r
}

// fillDecision reports what the handshake decided. Every name taken from
// the certificate is escaped here, the one place that copies them into the
// report.
func (r *Report) fillDecision(d *auth.Decision) {
	r.CertRequested = d.Requested
	r.CertReceived = len(d.Chain) > 0
	if !r.CertReceived {
		return
	}
	r.CertName = auth.CertName(d.Chain[0])
	ok := d.Err == nil
	r.CertValidated = &ok
	r.TrustStore = d.Store.String()
	if d.Agent != "" {
		r.CertAgent = safetext.Escape(d.Agent)
	}
	if d.Err != nil {
		r.VerifyError = safetext.Escape(d.Err.Error())
	}
	for _, c := range d.Chain {
		r.PeerChain = append(r.PeerChain, certInfo(c))
	}
}

// logHandshake writes a debug line for each completed handshake.
func (s *Server) logHandshake(c *auth.Conn, cs tls.ConnectionState) {
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []any{"remote", c.RemoteAddr().String(), "tls_flags", c.Flags(),
		"version", tls.VersionName(cs.Version), "alpn", cs.NegotiatedProtocol, "resumed", cs.DidResume}
	if d := c.Decision(); d != nil {
		attrs = append(attrs, "cert_requested", d.Requested)
		if len(d.Chain) > 0 {
			attrs = append(attrs, "cert", auth.CertName(d.Chain[0]), "store", d.Store.String(), "validated", d.Err == nil)
			if d.Agent != "" {
				attrs = append(attrs, "agent", safetext.Escape(d.Agent))
			}
			if d.Err != nil {
				attrs = append(attrs, "verify_error", d.Err.Error())
			}
		}
	}
	s.log.Debug("handshake", attrs...)
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
