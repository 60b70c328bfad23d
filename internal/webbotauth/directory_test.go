package webbotauth

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// directoryServer serves h at the directory path over HTTPS.
func directoryServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(DirectoryPath, h)
	s := httptest.NewTLSServer(mux)
	t.Cleanup(s.Close)
	return s
}

func TestFetchDirectory(t *testing.T) {
	_, k1, _ := ed25519.GenerateKey(nil)
	_, k2, _ := ed25519.GenerateKey(nil)
	_, stranger, _ := ed25519.GenerateKey(nil)
	wallNow := time.Now()
	good := directoryServer(t, dirHandler(t, k1, k2))
	keys, ttl, err := FetchDirectory(context.Background(), good.Client(), good.URL, wallNow)
	if err != nil || len(keys) != 2 || ttl != 5*time.Minute {
		t.Fatalf("fetched %d keys for %v, %v", len(keys), ttl, err)
	}
	if _, ok := keys[httpsig.Thumbprint(k2.Public().(ed25519.PublicKey))]; !ok {
		t.Error("k2 missing by thumbprint")
	}
	resp, _ := good.Client().Get(good.URL + DirectoryPath)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != DirectoryMediaType {
		t.Errorf("Content-Type %q", ct)
	}

	// Signed by a key it does not list.
	forged := directoryServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		dirHandler(t, stranger).ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		// ... with k1's JWKS as the body.
		body := httptest.NewRecorder()
		dirHandler(t, k1).ServeHTTP(body, r)
		io.Copy(w, body.Body)
	}))
	if _, _, err := FetchDirectory(context.Background(), forged.Client(), forged.URL, wallNow); err == nil || !strings.Contains(err.Error(), "not signed by a key it lists") {
		t.Errorf("a directory signed by another key: %v", err)
	}
	// Tampered signature.
	tampered := directoryServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		dirHandler(t, k1).ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Signature", "binding0=:"+strings.Repeat("A", 86)+"==:")
		io.Copy(w, rec.Body)
	}))
	if _, _, err := FetchDirectory(context.Background(), tampered.Client(), tampered.URL, wallNow); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("a directory with a bad signature: %v", err)
	}
	// Expired signatures (the fetcher's clock an hour ahead).
	if _, _, err := FetchDirectory(context.Background(), good.Client(), good.URL, wallNow.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("a directory whose signatures expired: %v", err)
	}
	// Plain HTTP is refused.
	if _, _, err := FetchDirectory(context.Background(), http.DefaultClient, "http://127.0.0.1:1", wallNow); err == nil || !strings.Contains(err.Error(), "HTTPS only") {
		t.Errorf("an http:// agent: %v", err)
	}
}

// TestVerifierFetchedAgent: an agent listed by URL alone gets its keys from
// its directory, and a request signed with one of them verifies.
func TestVerifierFetchedAgent(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	dir := directoryServer(t, dirHandler(t, k))
	agent := NewFetchedAgent(dir.URL)
	v := New(Config{Agents: []*Agent{agent}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Refresh(ctx, dir.Client(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for deadline := time.Now().Add(10 * time.Second); agent.keysNow() == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	p, _ := httpsig.BotParams(k.Public().(ed25519.PublicKey), time.Now(), time.Minute)
	r := signed(t, "site.example", k, dir.URL, false, p)
	if res := v.Verify(r); res.Status != "valid" || res.Agent != dir.URL {
		t.Errorf("%+v", res)
	}
	if st := v.Agents(); len(st) != 1 || !st[0].Fetched || st[0].Keys != 1 || st[0].FetchesOK < 1 {
		t.Errorf("agent state %+v", st)
	}
}
