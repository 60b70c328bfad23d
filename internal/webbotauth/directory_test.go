package webbotauth

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"

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
	for deadline := time.Now().Add(10 * time.Second); agent.keysAt(time.Now()) == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
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

// TestFetchDirectoryNoRedirects: a directory that redirects, even to a
// good directory, is refused; the redirect is never followed
// (draft-meunier-webbotauth-httpsig-directory-00).
func TestFetchDirectoryNoRedirects(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	followed := false
	mux := http.NewServeMux()
	mux.Handle(DirectoryPath, http.RedirectHandler("/moved", http.StatusFound))
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		followed = true
		dirHandler(t, k).ServeHTTP(w, r)
	})
	s := httptest.NewTLSServer(mux)
	defer s.Close()
	c := s.Client()
	keys, _, err := FetchDirectory(context.Background(), c, s.URL, time.Now())
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("a redirecting directory: %d keys, err %v; want a redirect refused", len(keys), err)
	}
	if followed {
		t.Error("the redirect was followed")
	}
	if c.CheckRedirect != nil {
		t.Error("the caller's client was changed")
	}
}

// TestFetchDirectoryOnlyVouchedKeys: a directory listing two keys whose
// response only one of them signed yields that key alone
// (draft-meunier-webbotauth-httpsig-directory-00: keys no valid signature
// of the response vouches for are ignored).
func TestFetchDirectoryOnlyVouchedKeys(t *testing.T) {
	_, signer, _ := ed25519.GenerateKey(nil)
	_, silent, _ := ed25519.GenerateKey(nil)
	s := directoryServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sigs := httptest.NewRecorder()
		dirHandler(t, signer).ServeHTTP(sigs, r)
		for k, v := range sigs.Header() {
			w.Header()[k] = v
		}
		body := httptest.NewRecorder()
		dirHandler(t, signer, silent).ServeHTTP(body, r)
		io.Copy(w, body.Body)
	}))
	keys, _, err := FetchDirectory(context.Background(), s.Client(), s.URL, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := keys[httpsig.Thumbprint(signer.Public().(ed25519.PublicKey))]; !ok || len(keys) != 1 {
		t.Errorf("got %d keys (signer's among them: %v), want the signer's alone", len(keys), ok)
	}
}

// TestDirectoryWithdrawnOrStale: a directory answering 404 or 410 after a
// good fetch has withdrawn its keys, and they go at that fetch; any other
// failure keeps the last good keys while the answer's cache lifetime and
// then MaxStale last, and no longer.
func TestDirectoryWithdrawnOrStale(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	var status atomic.Int64 // 0: serve the directory
	dir := directoryServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st := status.Load(); st != 0 {
			http.Error(w, "no", int(st))
			return
		}
		dirHandler(t, k).ServeHTTP(w, r)
	}))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name   string
		status int
		after  time.Duration // since the good fetch
		keys   int
	}{
		{"NotFound", http.StatusNotFound, 0, 0},
		{"Gone", http.StatusGone, 0, 0},
		{"ServerErrorWithinCacheLifetime", http.StatusInternalServerError, 4 * time.Minute, 1},
		{"ServerErrorWithinMaxStale", http.StatusInternalServerError, 5*time.Minute + 59*time.Minute, 1},
		{"ServerErrorPastMaxStale", http.StatusInternalServerError, 5*time.Minute + 61*time.Minute, 0},
		{"ForbiddenPastMaxStale", http.StatusForbidden, 5*time.Minute + 61*time.Minute, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			clock := start
			agent := NewFetchedAgent(dir.URL)
			v := New(Config{Agents: []*Agent{agent}, Now: func() time.Time { return clock }, MaxStale: time.Hour})
			status.Store(0)
			v.refresh(context.Background(), dir.Client(), agent, log)
			if n := v.Agents()[0].Keys; n != 1 {
				t.Fatalf("%d keys after a good fetch", n)
			}
			status.Store(int64(tc.status))
			v.refresh(context.Background(), dir.Client(), agent, log)
			clock = start.Add(tc.after)
			if n := v.Agents()[0].Keys; n != tc.keys {
				t.Errorf("%d keys in force %v after the good fetch, the directory answering %d; want %d", n, tc.after, tc.status, tc.keys)
			}
		})
	}
}

// TestFetchDirectorySignedOverContentDigest: a directory whose response
// signature covers ("@authority";req "content-digest") is checked with
// @authority from the request and content-digest from the response
// (RFC 9421, Section 2.4), and the digest against the body (RFC 9530).
func TestFetchDirectorySignedOverContentDigest(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	pub := k.Public().(ed25519.PublicKey)
	jwks := `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}]}`
	sha256Digest := func(b string) string {
		sum := sha256.Sum256([]byte(b))
		return "sha-256=:" + base64.StdEncoding.EncodeToString(sum[:]) + ":"
	}
	serve := func(body, digest string) *httptest.Server {
		return directoryServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := httpsig.Params{Created: time.Now(), Expires: time.Now().Add(time.Minute), KeyID: httpsig.Thumbprint(pub), Alg: "ed25519", Tag: DirectoryTag}
			covered := httpsig.NewCovered([]string{"@authority;req", "content-digest"}, p)
			params, _ := httpsfv.Marshal(httpsfv.List{covered})
			// The base written out as RFC 9421, Section 2.5 says: the
			// authority the request named, the digest the response
			// carries.
			base := `"@authority";req: ` + r.Host + "\n" + `"content-digest": ` + digest + "\n" + `"@signature-params": ` + params
			in, _ := httpsfv.Marshal(dictOf("directory", covered))
			w.Header().Set("Signature-Input", in)
			w.Header().Set("Signature", "directory=:"+base64.StdEncoding.EncodeToString(ed25519.Sign(k, []byte(base)))+":")
			w.Header().Set("Content-Digest", digest)
			w.Header().Set("Content-Type", DirectoryMediaType)
			io.WriteString(w, body)
		}))
	}
	good := serve(jwks, sha256Digest(jwks))
	keys, _, err := FetchDirectory(context.Background(), good.Client(), good.URL, time.Now())
	if err != nil || len(keys) != 1 {
		t.Errorf("a directory signed over its Content-Digest: %d keys, %v", len(keys), err)
	}
	// The body is not the one the signed digest names.
	tampered := serve(jwks+" ", sha256Digest(jwks))
	if _, _, err := FetchDirectory(context.Background(), tampered.Client(), tampered.URL, time.Now()); err == nil || !strings.Contains(err.Error(), "Content-Digest") {
		t.Errorf("a body that does not match its signed Content-Digest: %v", err)
	}
}
