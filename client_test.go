package reqmtls_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/testpki"
)

// TestConfigErrorsNameFields: a ClientConfig that cannot work is refused
// by NewTransport and NewDialer alike, with an error that names the field
// at fault and says why; an encrypted key says it is encrypted.
func TestConfigErrorsNameFields(t *testing.T) {
	p := testpki.New(t)
	dir := t.TempDir()
	write := func(name string, b *pem.Block) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	// What `openssl pkcs8 -topk8` (PKCS #8) and `openssl ec -aes256`
	// (the legacy PEM headers) write; the ciphertext itself never matters.
	pkcs8 := write("pkcs8.key", &pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("0123456789abcdef")})
	legacy := write("legacy.key", &pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"}, Bytes: []byte("0123456789abcdef")})
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	crt := p.Clients["valid"][0]
	for _, tc := range []struct {
		name string
		cfg  reqmtls.ClientConfig
		want string
	}{
		{"codepoint", reqmtls.ClientConfig{Codepoint: 1}, "ClientConfig.Codepoint 0x0001: want 0xfe01 (CodepointExperimental) or 62 (CodepointBoringSSL)"},
		{"agent_without_key", reqmtls.ClientConfig{SignatureAgent: "https://bot.example"}, `SignatureAgent "https://bot.example": no SignatureKey to sign with`},
		{"dictionary_without_key", reqmtls.ClientConfig{SignatureAgentDictionary: true}, "SignatureAgentDictionary: no SignatureKey to sign with"},
		{"agent_not_https", reqmtls.ClientConfig{SignatureKey: edKey, SignatureAgent: "bot.example"}, `SignatureAgent "bot.example": want the https:// URL where the key's directory lives`},
		{"key_not_ed25519", reqmtls.ClientConfig{SignatureKey: ecKey}, "SignatureKey: a *ecdsa.PrivateKey, want an Ed25519 key"},
		{"resolve", reqmtls.ClientConfig{Resolve: map[string]string{"bot.example": "127.0.0.1:443"}}, `ClientConfig.Resolve "bot.example": want host:port`},
		{"key_pkcs8_encrypted", reqmtls.ClientConfig{CertFile: crt, KeyFile: pkcs8}, `KeyFile "` + pkcs8 + `": the private key is encrypted`},
		{"key_legacy_encrypted", reqmtls.ClientConfig{CertFile: crt, KeyFile: legacy}, `KeyFile "` + legacy + `": the private key is encrypted`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, terr := reqmtls.NewTransport(tc.cfg)
			_, derr := reqmtls.NewDialer(tc.cfg)
			for _, err := range []error{terr, derr} {
				if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
					t.Errorf("%v, want %q", err, tc.want)
				}
			}
		})
	}
	// The forward proxy's transport for hosts left out of FlagHosts signs
	// nothing: it takes neither the key nor the agent.
	if _, err := reqmtls.NewForwardProxy(reqmtls.ForwardProxyConfig{CADir: filepath.Join(dir, "ca"),
		Client: reqmtls.ClientConfig{SignatureKey: edKey, SignatureAgent: "https://bot.example"}}); err != nil {
		t.Errorf("a forward proxy that signs: %v", err)
	}
	for _, f := range []string{pkcs8, legacy} {
		if _, err := reqmtls.LoadSignatureKey(f); err == nil || !strings.HasPrefix(err.Error(), `signing key "`+f+`": the private key is encrypted`) {
			t.Errorf("LoadSignatureKey(%q): %v, want it to say the key is encrypted", f, err)
		}
	}
}
