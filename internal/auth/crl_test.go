package auth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadCRLs: whatever the file holds, loading it never panics, and a
// refusal names the file.
func FuzzLoadCRLs(f *testing.F) {
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(t.TempDir(), "crl")
		os.WriteFile(file, data, 0o600)
		set, err := loadCRLs(file)
		if err == nil {
			t.Fatalf("a CRL loaded with no store to sign it: %d lists", len(set.list))
		}
		if !strings.Contains(err.Error(), file) {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
