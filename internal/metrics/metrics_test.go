package metrics

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/req-mtls/req-mtls/internal/clienthello"
)

func TestFailureReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&clienthello.FlagsError{Codepoint: 0xfe01, Reason: "sent twice"}, "illegal_parameter"},
		{clienthello.ErrTooLarge, "decode_error"},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), "timeout"},
		{io.EOF, "closed"},
		{errors.New("tls: client didn't provide a certificate"), "certificate_required"},
		{errors.New("client certificate rejected: x509: certificate signed by unknown authority"), "bad_certificate"},
		{tls.RecordHeaderError{Msg: "unsupported SSLv2 handshake received"}, "not_tls"},
		{errors.New("tls: client offered only unsupported versions: [301]"), "protocol_version"},
		{errors.New("something new"), "other"},
	} {
		if got := FailureReason(tc.err); got != tc.want {
			t.Errorf("FailureReason(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}
