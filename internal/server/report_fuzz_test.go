package server

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/clienthello"
	"github.com/req-mtls/req-mtls/internal/safetext"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// FuzzReportJSON feeds arbitrary ClientHellos, flag vectors, certificate
// names and verification errors through the /debug writers: the JSON is
// always valid, carries the values back, and has exactly the lines the same
// report has with plain values (nothing in a name adds or removes one); the
// text form has exactly the reference's lines.
func FuzzReportJSON(f *testing.F) {
	seeds, _ := filepath.Glob("../clienthello/testdata/*.hex")
	for _, name := range seeds {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		raw, err := hex.DecodeString(string(bytes.TrimSpace(data)))
		if err == nil && len(raw) > 5 {
			f.Add(raw[5:], []byte{0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "client.example", "", true)
		}
	}
	f.Add([]byte{}, []byte{1, 0}, "\xff\"<script>", "x509: certificate signed by unknown authority", false)
	f.Add([]byte{}, []byte{0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "x\nCert validated: true", "bad\r\nline", true)
	f.Fuzz(func(t *testing.T, hello, flagData []byte, name, verifyErr string, received bool) {
		r := fuzzReport(hello, flagData, name, verifyErr, received)
		b, err := MarshalReport(r)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Fatalf("invalid JSON: %s", b)
		}
		var back struct {
			Flags []int  `json:"client_tls_flags"`
			Name  string `json:"cert_received"`
		}
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if len(back.Flags) != len(r.ClientFlags.Flags()) {
			t.Fatalf("flags %v came back as %v", r.ClientFlags, back.Flags)
		}
		if received && back.Name != safetext.Escape(name) {
			t.Fatalf("name %q came back as %q", name, back.Name)
		}
		plain, err := MarshalReport(fuzzReport(hello, flagData, plain(name, "client.example"), plain(verifyErr, "plain error"), received))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := bytes.Count(b, []byte("\n")), bytes.Count(plain, []byte("\n")); got != want {
			t.Fatalf("JSON has %d lines, the same report with plain values %d:\n%s", got, want, b)
		}
		checkTextLines(t, r, received)
	})
}

// FuzzReportText: whatever the certificate's name and the verification
// error, the text form has exactly the reference's lines, each with its
// prefix, so no name can forge a line.
func FuzzReportText(f *testing.F) {
	f.Add("client.example", "", true)
	f.Add("x\nCert validated: true", "", true)
	f.Add("a\rCert validated: true\u2028", "x\ny", true)
	f.Add("", "", false)
	f.Fuzz(func(t *testing.T, name, verifyErr string, received bool) {
		checkTextLines(t, fuzzReport(nil, []byte{0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, name, verifyErr, received), received)
	})
}

// fuzzReport builds a report the way the server does, from a decision
// about a certificate whose DNS name and subject are name.
func fuzzReport(hello, flagData []byte, name, verifyErr string, received bool) *Report {
	flags, _ := tlsflags.Parse(flagData)
	r := &Report{ClientFlags: flags, MutualFlags: flags.Intersect(Supported)}
	if s, err := clienthello.Summarize(hello); err == nil {
		r.ClientHello = s
	}
	d := &auth.Decision{Flagged: flags.Has(tlsflags.RequestMTLS), Requested: true}
	if received {
		d.Chain = []*x509.Certificate{{DNSNames: []string{name}, Subject: pkix.Name{CommonName: name}, SerialNumber: big.NewInt(1)}}
		if verifyErr != "" {
			d.Err = errors.New(verifyErr)
		}
	}
	r.fillDecision(d)
	return r
}

// plain returns with for a non-empty s: the same report shape (empty
// fields are left out of the JSON) with a value that needs no escaping.
func plain(s, with string) string {
	if s == "" {
		return ""
	}
	return with
}

var textPrefixes = []string{"Client sent TLS Flags: [", "Mutually supported TLS Flags: [", "Client cert requested: ",
	"Peer certificate received: ", "Cert received: ", "Cert validated: "}

func checkTextLines(t *testing.T, r *Report, received bool) {
	t.Helper()
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	want := 4
	if received {
		want = 6
	}
	lines := strings.Split(strings.TrimSuffix(text.String(), "\n"), "\n")
	if len(lines) != want || !strings.HasSuffix(text.String(), "\n") {
		t.Fatalf("text has %d lines, want %d:\n%s", len(lines), want, text.String())
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, textPrefixes[i]) || strings.ContainsAny(l, "\r\x00\u2028\u2029") {
			t.Fatalf("line %d is %q, want a %q line", i+1, l, textPrefixes[i])
		}
	}
}
