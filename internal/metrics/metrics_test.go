package metrics

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
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

// TestSitesShareRoots: the certificates of several sites, which may share
// roots and CRLs, are one series each: a scrape gathers without a
// duplicate, and every site's server certificate is in it.
func TestSitesShareRoots(t *testing.T) {
	cert := func(cn string, days int) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotAfter: time.Unix(0, 0).AddDate(0, 0, days)}
	}
	root := cert("shared root", 3650)
	m := New(func() ([]*x509.Certificate, map[string][]*x509.Certificate) {
		return []*x509.Certificate{cert("a.example", 90), cert("b.example", 30)}, map[string][]*x509.Certificate{"client": {root, root}}
	}, func() []auth.CRLInfo {
		return []auth.CRLInfo{{Issuer: "CN=shared root", Revoked: 2}, {Issuer: "CN=shared root", Revoked: 2}}
	}, nil, nil)
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var got []string
	for _, f := range families {
		if n := f.GetName(); n == "reqmtls_certificate_not_after_seconds" || n == "reqmtls_crl_revoked_certificates" {
			for _, s := range f.GetMetric() {
				var labels []string
				for _, l := range s.GetLabel() {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
				got = append(got, fmt.Sprintf("%s{%s} %v", n, strings.Join(labels, ","), s.GetGauge().GetValue()))
			}
		}
	}
	want := []string{
		"reqmtls_certificate_not_after_seconds{role=client_root,subject=CN=shared root} 3.1536e+08",
		"reqmtls_certificate_not_after_seconds{role=server,subject=CN=a.example} 7.776e+06",
		"reqmtls_certificate_not_after_seconds{role=server,subject=CN=b.example} 2.592e+06",
		"reqmtls_crl_revoked_certificates{issuer=CN=shared root} 2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
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
