package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"reflect"
	"syscall"

	utls "github.com/refraction-networking/utls"
)

// An Error is a failure explained for a person: what went wrong, and when
// there is one, what to try.
type Error struct {
	Msg  string
	Hint string
	// Alert is the name of the TLS alert the server sent
	// ("certificate_required", say), when one explains the failure.
	Alert string
	Err   error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// AlertNames are the TLS alert descriptions of RFC 8446, Section 6, and
// the ones of earlier versions still sent.
var AlertNames = map[uint8]string{
	0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
	21: "decryption_failed", 22: "record_overflow", 40: "handshake_failure",
	42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
	45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter",
	48: "unknown_ca", 49: "access_denied", 50: "decode_error", 51: "decrypt_error",
	70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
	86: "inappropriate_fallback", 90: "user_canceled", 100: "no_renegotiation",
	109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
	113: "bad_certificate_status_response", 115: "unknown_psk_identity",
	116: "certificate_required", 120: "no_application_protocol", 121: "ech_required",
}

// certificateAlerts are the alerts a server sends about our certificate.
var certificateAlerts = map[uint8]bool{42: true, 43: true, 44: true, 45: true, 46: true, 48: true, 116: true}

// remoteAlert returns the alert the peer sent, if err is one. crypto/tls
// and uTLS report it as a net.OpError "remote error" around an unexported
// uint8 type.
func remoteAlert(err error) (uint8, bool) {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" && oe.Err != nil {
		if v := reflect.ValueOf(oe.Err); v.Kind() == reflect.Uint8 {
			return uint8(v.Uint()), true
		}
	}
	var ae utls.AlertError
	if errors.As(err, &ae) {
		return uint8(ae), true
	}
	return 0, false
}

// Explain turns err into an *Error saying what failed during what, naming
// the TLS alert the peer sent, if any.
func Explain(err error, during string) error { return explain(err, during) }

// Explain is explain, and says to pass a certificate when the server
// required one and this Client has none.
func (c *Client) Explain(err error, during string) error { return c.explain(err, during) }

func (c *Client) explain(err error, during string) error {
	err = explain(err, during)
	var e *Error
	if errors.As(err, &e) && e.Alert == "certificate_required" && c.certs == nil {
		return &Error{Err: e.Err, Alert: e.Alert, Msg: "server requires a client certificate and none was sent: certificate_required",
			Hint: "give one in CertFile and KeyFile (or GetClientCertificate), issued by a CA the server trusts"}
	}
	return err
}

// explain turns err into an *Error saying what failed during what.
func explain(err error, during string) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if a, ok := remoteAlert(err); ok {
		name := AlertNames[a]
		if name == "" {
			name = fmt.Sprintf("alert %d", a)
		}
		if certificateAlerts[a] {
			hint := "check that the certificate in CertFile is issued by a CA the server trusts, is within its validity and has the clientAuth usage"
			if name == "certificate_revoked" {
				hint = "the server holds this certificate revoked (its issuer's CRL lists it): ask the CA for a new one"
			}
			return &Error{Err: err, Alert: name, Msg: "server rejected the client certificate: " + name, Hint: hint}
		}
		return &Error{Err: err, Alert: name, Msg: fmt.Sprintf("%s: server sent TLS alert %s", during, name)}
	}
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostErr x509.HostnameError
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &unknownCA):
		return &Error{Err: err, Msg: "server certificate is not trusted: signed by an unknown authority",
			Hint: "put the server's root in RootCAs (the system roots are used without it)"}
	case errors.As(err, &invalid):
		return &Error{Err: err, Msg: "server certificate is not valid: " + invalid.Error()}
	case errors.As(err, &hostErr):
		return &Error{Err: err, Msg: "server certificate does not match the host: " + hostErr.Error()}
	case errors.As(err, &dnsErr):
		return &Error{Err: err, Msg: fmt.Sprintf("cannot resolve %q: %s", dnsErr.Name, dnsErr.Err),
			Hint: "check the host name, and that this machine has a network and a DNS resolver"}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &Error{Err: err, Msg: during + ": connection refused", Hint: "is the server running on that address and port?"}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return &Error{Err: err, Msg: during + ": timed out", Hint: "raise Timeout if the server is slow"}
	}
	return &Error{Err: err, Msg: fmt.Sprintf("%s: %v", during, err)}
}
