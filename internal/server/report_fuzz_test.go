package server

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/req-mtls/req-mtls/internal/clienthello"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// FuzzReportJSON feeds arbitrary ClientHellos, flag vectors and certificate
// strings through the /debug writers: the JSON is always valid and carries
// the values back; the text form always has the reference's line structure.
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
	f.Fuzz(func(t *testing.T, hello, flagData []byte, certName, verifyErr string, received bool) {
		flags, _ := tlsflags.Parse(flagData)
		r := &Report{ClientFlags: flags, MutualFlags: flags.Intersect(Supported), CertReceived: received}
		if s, err := clienthello.Summarize(hello); err == nil {
			r.ClientHello = s
		}
		if received {
			ok := verifyErr == ""
			r.CertName, r.CertValidated, r.VerifyError = certName, &ok, verifyErr
			r.PeerChain = []CertInfo{{Subject: certName, DNSNames: []string{certName}}}
		}
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
		if len(back.Flags) != len(flags.Flags()) {
			t.Fatalf("flags %v came back as %v", flags, back.Flags)
		}
		if received && utf8.ValidString(certName) && back.Name != certName {
			t.Fatalf("name %q came back as %q", certName, back.Name)
		}
		var text strings.Builder
		if err := r.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		want := 4
		if received {
			want = 6
		}
		if got := strings.Count(text.String(), "\n"); got < want {
			t.Fatalf("text has %d lines, want at least %d", got, want)
		}
	})
}
