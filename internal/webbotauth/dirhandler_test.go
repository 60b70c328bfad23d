package webbotauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// dirHandler is DirectoryHandler for keys, failing the test on an error.
func dirHandler(t testing.TB, keys ...crypto.Signer) http.Handler {
	t.Helper()
	h, err := DirectoryHandler(keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestDirectoryListsTLSKey: a directory of a signing key and a TLS key
// (P-256, as gencert -agent makes) lists both, each signs the response,
// and a fetch finds both by thumbprint.
func TestDirectoryListsTLSKey(t *testing.T) {
	_, sk, _ := ed25519.GenerateKey(nil)
	tk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := directoryServer(t, dirHandler(t, sk, tk))
	keys, _, err := FetchDirectory(context.Background(), dir.Client(), dir.URL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, pub := range []crypto.PublicKey{sk.Public(), &tk.PublicKey} {
		id, err := httpsig.ThumbprintOf(pub)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := keys[id]
		if !ok || !got.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Errorf("key %s (%T) not in the fetched directory", id, pub)
		}
	}
	resp, err := dir.Client().Get(dir.URL + DirectoryPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sigs, err := httpsig.Parse(resp.Header)
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 2 || sigs["binding1"] == nil || sigs["binding1"].Params.Alg != "ecdsa-p256-sha256" {
		t.Errorf("response signatures %v, want binding0 (ed25519) and binding1 (ecdsa-p256-sha256)", sigs)
	}
	if _, err := DirectoryHandler([]crypto.Signer{mustRSA(t)}, nil); err == nil {
		t.Error("an RSA key was accepted for the directory")
	}
}

func mustRSA(t *testing.T) crypto.Signer {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
