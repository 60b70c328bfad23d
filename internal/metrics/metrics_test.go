package metrics

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"strings"
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

// TestAccessLogDropped: the access log's dropped lines are scraped by
// reason, as the function given says at the time of the scrape.
func TestAccessLogDropped(t *testing.T) {
	m := New(nil, nil, nil, nil)
	var failed, behind uint64 = 3, 0
	m.AddAccessLog(func() (uint64, uint64) { return failed, behind })
	behind = 1572
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`reqmtls_access_log_lines_dropped_total{reason="write_error"} 3`,
		`reqmtls_access_log_lines_dropped_total{reason="behind"} 1572`,
	} {
		if !strings.Contains(rec.Body.String(), want+"\n") {
			t.Errorf("no %s in:\n%s", want, rec.Body)
		}
	}
}
