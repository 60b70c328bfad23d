package server

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// agentSite is a bot's site serving its key directory, whose keys a test
// can change, and a verifier of a site that trusts the bot's agent URL.
type agentSite struct {
	url  string
	keys atomic.Pointer[[]crypto.Signer]
	v    *webbotauth.Verifier
	dir  *httptest.Server
}

func newAgentSite(t *testing.T, keys ...crypto.Signer) *agentSite {
	t.Helper()
	as := &agentSite{}
	as.keys.Store(&keys)
	mux := http.NewServeMux()
	mux.HandleFunc(webbotauth.DirectoryPath, func(w http.ResponseWriter, r *http.Request) {
		h, err := webbotauth.DirectoryHandler(*as.keys.Load(), testpki.Clock)
		if err != nil {
			t.Error(err)
			return
		}
		h.ServeHTTP(w, r)
	})
	as.dir = httptest.NewTLSServer(mux)
	t.Cleanup(as.dir.Close)
	as.url = as.dir.URL
	as.v = webbotauth.New(webbotauth.Config{Agents: []*webbotauth.Agent{webbotauth.NewFetchedAgent(as.url)}, Now: testpki.Clock})
	return as
}

// start fetches the directory in the background until the test ends, and
// waits for the first fetch.
func (as *agentSite) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	as.v.Refresh(ctx, as.dir.Client(), slog.New(slog.DiscardHandler))
	waitFor(t, "the first directory fetch", func() bool { return as.v.Agents()[0].FetchesOK > 0 })
}

// agentCert writes a certificate naming agentURL (self-signed, or issued by
// ca) and its key into dir, and returns the client config presenting it
// with flag 80, the certificate and its key.
func agentCert(t *testing.T, dir, agentURL string, ca *certs.Authority) (client.Config, *x509.Certificate, crypto.Signer) {
	t.Helper()
	cert, key, err := certs.IssueAgent(agentURL, ca, testpki.Now)
	if err != nil {
		t.Fatal(err)
	}
	crt := writePEM(t, "CERTIFICATE", cert.Raw)
	kf := writeKey(t, key)
	sub := filepath.Join(dir, filepath.Base(crt))
	if err := os.Rename(crt, sub); err != nil {
		t.Fatal(err)
	}
	return client.Config{Time: testpki.Clock, Flags: tlsflags.Must(80), CertFile: sub, KeyFile: kf}, cert, key
}

// agentReport is what the agent tests read of /debug's JSON.
type agentReport struct {
	CertValidated *bool  `json:"cert_validated"`
	VerifyError   string `json:"verify_error"`
	TrustStore    string `json:"trust_store"`
	CertAgent     string `json:"cert_agent"`
}

// debugJSON fetches /debug?format=json with cfg and decodes the report.
func debugJSON(t *testing.T, ts *testServer, p *testpki.PKI, cfg client.Config) (agentReport, outcome) {
	t.Helper()
	o := fetch(t, ts, p, cfg, "/debug?format=json")
	var r agentReport
	if o.err == nil {
		if err := json.Unmarshal([]byte(o.body), &r); err != nil {
			t.Fatalf("/debug JSON: %v\n%s", err, o.body)
		}
	}
	return r, o
}

// TestAgentCertificate: a trusted agent's directory vouches for a
// certificate naming it by URI, self-signed or CA-issued, as store agent;
// a key the directory does not list, an agent the site does not trust and
// a denied certificate are not valid, each saying why.
func TestAgentCertificate(t *testing.T) {
	p := testpki.New(t)
	dir := t.TempDir()
	_, sk, _ := ed25519.GenerateKey(nil)
	// The listed certificate's key is added once it is made.
	as := newAgentSite(t, sk)
	self, selfCert, selfKey := agentCert(t, dir, as.url, nil)
	issued, _, issuedKey := agentCert(t, dir, as.url, p.CA)
	unlisted, _, _ := agentCert(t, dir, as.url, nil)
	stranger, _, _ := agentCert(t, dir, "https://stranger.example", nil)
	as.keys.Store(&[]crypto.Signer{sk, selfKey, issuedKey})
	as.start(t)

	denyFile := filepath.Join(dir, "deny.txt")
	if err := os.WriteFile(denyFile, []byte("# none yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, p, Config{Policy: PolicyRequest, Signatures: as.v,
		Files: Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA, Deny: denyFile}})

	for _, c := range []struct {
		name   string
		cfg    client.Config
		valid  bool
		store  string
		reason string
	}{
		{"self-signed, key listed", self, true, "agent", ""},
		{"CA-issued, key listed", issued, true, "agent", ""},
		{"key not in the directory", unlisted, false, "agent", "is not in the agent's directory"},
		{"agent not trusted", stranger, false, "client", "https://stranger.example is not a trusted agent"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, o := debugJSON(t, ts, p, c.cfg)
			if o.err != nil {
				t.Fatal(o.err)
			}
			if r.CertValidated == nil || *r.CertValidated != c.valid || r.TrustStore != c.store {
				t.Fatalf("validated %v in store %q, want %v in %q: %s", r.CertValidated, r.TrustStore, c.valid, c.store, o.body)
			}
			if c.valid && r.CertAgent != as.url {
				t.Errorf("cert_agent %q, want %q", r.CertAgent, as.url)
			}
			if !c.valid && !strings.Contains(r.VerifyError, c.reason) {
				t.Errorf("verify_error %q does not say %q", r.VerifyError, c.reason)
			}
		})
	}

	// Rules see the agent from the TLS layer alone: store agent, and the
	// agent's URL.
	rules, probs := policy.Compile([]policy.Rule{
		{Name: "agent-by-store", Match: policy.Match{Store: "agent", Agent: as.url, Path: "/store"}, Action: "deny", Status: 418, Reason: "store agent"},
		{Name: "agent-by-url", Match: policy.Match{Agent: as.url}, Action: "deny", Status: 451, Reason: "agent"},
	}, policy.NewLocal(0))
	if probs != nil {
		t.Fatal(probs)
	}
	ts.SetRules(rules)
	for path, want := range map[string]int{"/store": 418, "/debug": 451} {
		if o := fetch(t, ts, p, self, path); o.err != nil || o.status != want {
			t.Errorf("%s with the agent's certificate: %d %v, want %d", path, o.status, o.err, want)
		}
		if o := fetch(t, ts, p, stranger, path); o.err != nil || o.status == want {
			t.Errorf("%s with a stranger's certificate: %d %v, want no rule's answer", path, o.status, o.err)
		}
	}
	ts.SetRules(nil)

	// Denied by its certificate's hash, whatever vouches for it.
	if err := os.WriteFile(denyFile, []byte("cert-sha256:"+certs.CertSHA256(selfCert)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ts.Reload("test"); err != nil {
		t.Fatal(err)
	}
	r, o := debugJSON(t, ts, p, self)
	if o.err != nil || r.CertValidated == nil || *r.CertValidated || !strings.Contains(r.VerifyError, "denied") {
		t.Errorf("a denied certificate: validated %v, %q, %v", r.CertValidated, r.VerifyError, o.err)
	}
}

// TestAgentDenyAndWithdrawal: under an enforcing policy, a denied agent
// certificate is refused with certificate_revoked, and the open
// connections of a certificate are closed when it is denied or when its
// agent withdraws its key.
func TestAgentDenyAndWithdrawal(t *testing.T) {
	p := testpki.New(t)
	dir := t.TempDir()
	_, sk, _ := ed25519.GenerateKey(nil)
	as := newAgentSite(t, sk)
	self, selfCert, selfKey := agentCert(t, dir, as.url, nil)
	other, _, otherKey := agentCert(t, dir, as.url, nil)
	as.keys.Store(&[]crypto.Signer{sk, selfKey, otherKey})
	as.start(t)
	denyFile := filepath.Join(dir, "deny.txt")
	if err := os.WriteFile(denyFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := watchedServer(t, p, Config{Policy: PolicyRequire, Signatures: as.v,
		Files: Files{Cert: p.ServerCert, Key: p.ServerKey, Deny: denyFile}})
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs)
		}
	}()
	cl, conn := liveConnWith(t, ts, p, self)
	ocl, oconn := liveConnWith(t, ts, p, other)

	// Denied: the open connection closes (the file is watched), a new
	// handshake is refused with certificate_revoked.
	denied := time.Now()
	if err := os.WriteFile(denyFile, []byte("spki-sha256:"+spkiHex(selfCert)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the denied certificate's connection to close", func() bool {
		_, err := cl.RoundTrip(conn, mustGet(ts.url.String()))
		return err != nil
	})
	t.Logf("the open connection refused requests %v after the deny list was written", time.Since(denied).Round(time.Millisecond))
	if o := fetch(t, ts, p, self, "/debug"); o.err == nil || !strings.Contains(o.err.Error(), "certificate_revoked") {
		t.Errorf("a denied certificate's handshake: %v, want certificate_revoked", o.err)
	}

	// Withdrawn: the agent drops the other key from its directory; at the
	// next fetch (asked for by a reload) its connection closes.
	as.keys.Store(&[]crypto.Signer{sk})
	withdrawn := time.Now()
	if err := ts.Reload("test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the withdrawn key's connection to close", func() bool {
		_, err := ocl.RoundTrip(oconn, mustGet(ts.url.String()))
		return err != nil
	})
	t.Logf("the open connection refused requests %v after the reload that fetched the directory without its key", time.Since(withdrawn).Round(time.Millisecond))
	if !strings.Contains(ts.logs.String(), "is not in the agent's directory") {
		t.Error("the closing line does not say the key left the directory")
	}
	if o := fetch(t, ts, p, other, "/debug"); o.err == nil {
		t.Error("a withdrawn key still makes handshakes")
	}
}

func spkiHex(c *x509.Certificate) string {
	h, _ := certs.SPKIHash(c.PublicKey)
	return h
}
