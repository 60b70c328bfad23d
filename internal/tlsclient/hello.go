// Package tlsclient opens client TLS connections whose ClientHello carries the
// tls_flags extension (draft-ietf-tls-tlsflags), which stock crypto/tls cannot
// send. The ClientHello is built with uTLS to mirror Go's own default
// ClientHello, with the flags added only when there are any.
package tlsclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// Hello says what to put into a ClientHello beyond Go's defaults.
type Hello struct {
	// Flags to send; empty means no tls_flags extension at all.
	Flags tlsflags.Set
	// Codepoint of the tls_flags extension; 0 means
	// tlsflags.CodepointExperimental.
	Codepoint uint16
	// NextProtos to offer with ALPN, in order; none means no ALPN extension.
	NextProtos []string
	// TLS12Only offers TLS 1.2 alone (and so sends no flags, which mean
	// nothing under TLS 1.2).
	TLS12Only bool
	// Groups overrides the supported groups; the key share is then sent
	// for the first one only (and X25519 beside X25519MLKEM768). Empty means Go's defaults, with key shares
	// for X25519MLKEM768 and X25519.
	Groups []utls.CurveID
	// Resumable adds what session resumption needs (session_ticket,
	// psk_key_exchange_modes and pre_shared_key), as Go does when a
	// ClientSessionCache is configured. Set the cache on the Config too.
	Resumable bool
}

// Go's default ClientHello contents (crypto/tls defaults.go and
// cipher_suites.go for Go 1.26). The two hybrid groups SecP256r1MLKEM768 and
// SecP384r1MLKEM1024 are left out: uTLS cannot complete a HelloRetryRequest
// to them.
var (
	tls12Suites = []uint16{
		utls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		utls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		utls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		utls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		utls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		utls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		utls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		utls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		utls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		utls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	}
	tls13Suites = []uint16{
		utls.TLS_AES_128_GCM_SHA256,
		utls.TLS_AES_256_GCM_SHA384,
		utls.TLS_CHACHA20_POLY1305_SHA256,
	}
	groups = []utls.CurveID{
		utls.X25519MLKEM768, utls.X25519, utls.CurveP256, utls.CurveP384, utls.CurveP521,
	}
	signatureAlgorithms = []utls.SignatureScheme{
		utls.PSSWithSHA256,
		utls.ECDSAWithP256AndSHA256,
		utls.Ed25519,
		utls.PSSWithSHA384,
		utls.PSSWithSHA512,
		utls.PKCS1WithSHA256,
		utls.PKCS1WithSHA384,
		utls.PKCS1WithSHA512,
		utls.ECDSAWithP384AndSHA384,
		utls.ECDSAWithP521AndSHA512,
	}
)

// Spec returns a new ClientHelloSpec. Build one for every connection: the
// key shares live in the spec.
func (h Hello) Spec() (*utls.ClientHelloSpec, error) {
	versions := []uint16{utls.VersionTLS13, utls.VersionTLS12}
	suites := append(append([]uint16{}, tls12Suites...), tls13Suites...)
	if h.TLS12Only {
		versions, suites = versions[1:], suites[:len(tls12Suites)]
	}
	supported := groups
	shares := []utls.KeyShare{{Group: utls.X25519MLKEM768}, {Group: utls.X25519}}
	if len(h.Groups) > 0 {
		supported, shares = h.Groups, []utls.KeyShare{{Group: h.Groups[0]}}
		if h.Groups[0] == utls.X25519MLKEM768 {
			// uTLS builds the hybrid share on an X25519 share of its own,
			// and fails without one (Go sends both as well).
			shares = append(shares, utls.KeyShare{Group: utls.X25519})
		}
	}
	// The extension order follows Go's clientHelloMsg.marshal, with tls_flags
	// after supported_versions as the deployed request-mTLS clients send it.
	exts := []utls.TLSExtension{
		&utls.SNIExtension{},
		&utls.SupportedPointsExtension{SupportedPoints: []byte{0}}, // uncompressed
	}
	if h.Resumable {
		exts = append(exts, &utls.SessionTicketExtension{})
	}
	exts = append(exts,
		&utls.RenegotiationInfoExtension{Renegotiation: utls.RenegotiateOnceAsClient},
		&utls.ExtendedMasterSecretExtension{},
		&utls.SCTExtension{},
		&utls.StatusRequestExtension{},
		&utls.SupportedCurvesExtension{Curves: supported},
		&utls.SignatureAlgorithmsExtension{SupportedSignatureAlgorithms: signatureAlgorithms},
		&utls.SignatureAlgorithmsCertExtension{SupportedSignatureAlgorithms: signatureAlgorithms},
	)
	if len(h.NextProtos) > 0 {
		exts = append(exts, &utls.ALPNExtension{AlpnProtocols: h.NextProtos})
	}
	exts = append(exts, &utls.SupportedVersionsExtension{Versions: versions})
	if !h.Flags.IsEmpty() && !h.TLS12Only {
		data, err := h.Flags.ExtensionData()
		if err != nil {
			return nil, err
		}
		cp := h.Codepoint
		if cp == 0 {
			cp = tlsflags.CodepointExperimental
		}
		exts = append(exts, &utls.GenericExtension{Id: cp, Data: data})
	}
	if !h.TLS12Only {
		exts = append(exts, &utls.KeyShareExtension{KeyShares: shares})
		if h.Resumable {
			exts = append(exts,
				&utls.PSKKeyExchangeModesExtension{Modes: []uint8{utls.PskModeDHE}},
				// RFC 8446, Section 4.2.11: pre_shared_key comes last.
				// Without a session to resume it is left out
				// (OmitEmptyPsk).
				&utls.UtlsPreSharedKeyExtension{},
			)
		}
	}
	return &utls.ClientHelloSpec{
		CipherSuites:       suites,
		CompressionMethods: []uint8{0},
		Extensions:         exts,
		TLSVersMin:         utls.VersionTLS12,
		TLSVersMax:         versions[0],
	}, nil
}

// Client returns a uTLS client connection on conn that sends h. cfg is
// cloned (uTLS writes to the Config it is given); OmitEmptyPsk is set on the
// clone.
func (h Hello) Client(conn net.Conn, cfg *utls.Config) (*Conn, error) {
	spec, err := h.Spec()
	if err != nil {
		return nil, err
	}
	cfg = cfg.Clone()
	cfg.OmitEmptyPsk = true
	if h.TLS12Only {
		cfg.MaxVersion = utls.VersionTLS12
	}
	uc := utls.UClient(conn, cfg, utls.HelloCustom)
	if err := uc.ApplyPreset(spec); err != nil {
		return nil, fmt.Errorf("build ClientHello: %w", err)
	}
	return &Conn{UConn: uc}, nil
}

// Dial connects to addr and completes a TLS handshake sending h.
func (h Hello) Dial(ctx context.Context, d *net.Dialer, network, addr string, cfg *utls.Config) (*Conn, error) {
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c, err := h.Client(raw, cfg)
	if err != nil {
		raw.Close()
		return nil, err
	}
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// Conn is a uTLS connection with the crypto/tls view of its state, so that
// net/http and x/net/http2 (which look for a ConnectionState method returning
// crypto/tls's type) can see the negotiated protocol.
type Conn struct {
	*utls.UConn
}

// ConnectionState returns the connection state as crypto/tls's type. The
// fields that have no counterpart (the uTLS-only ones, ECH, the TLS-unique
// value) are left zero.
func (c *Conn) ConnectionState() tls.ConnectionState {
	s := c.UConn.ConnectionState()
	return tls.ConnectionState{
		Version:                     s.Version,
		HandshakeComplete:           s.HandshakeComplete,
		DidResume:                   s.DidResume,
		CipherSuite:                 s.CipherSuite,
		NegotiatedProtocol:          s.NegotiatedProtocol,
		NegotiatedProtocolIsMutual:  true,
		ServerName:                  s.ServerName,
		PeerCertificates:            s.PeerCertificates,
		VerifiedChains:              s.VerifiedChains,
		SignedCertificateTimestamps: s.SignedCertificateTimestamps,
		OCSPResponse:                s.OCSPResponse,
	}
}
