package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// resumeStep is one connection of a resumption sequence and what it must
// see. validated is the /debug ending: "" for no certificate, else the
// certificate's name and "true" or "false".
type resumeStep struct {
	name      string
	cfg       client.Config
	resumed   bool
	requested bool
	cert      string // name in "Cert received", "" when none
	validated bool
}

func runSteps(t *testing.T, ts *testServer, p *testpki.PKI, steps []resumeStep) {
	t.Helper()
	for _, st := range steps {
		o := fetch(t, ts, p, st.cfg, "/debug")
		if o.err != nil {
			t.Fatalf("%s: %v", st.name, o.err)
		}
		if o.hs.Resumed != st.resumed || o.hs.CertRequested != st.requested {
			t.Errorf("%s: resumed %v requested %v, want %v %v", st.name, o.hs.Resumed, o.hs.CertRequested, st.resumed, st.requested)
		}
		want := "Peer certificate received: false\n"
		if st.cert != "" {
			want = "Cert received: " + st.cert + "\nCert validated: " + tf(st.validated) + "\n"
		}
		if !strings.HasSuffix(o.body, want) {
			t.Errorf("%s: /debug\n%s\nwant suffix\n%s", st.name, o.body, want)
		}
	}
}

// TestResumptionSequence walks sequences of connections that share one
// client session cache, under every policy, with and without a bot store.
// A flagged client resuming a session that carried no certificate must get
// a full handshake with a CertificateRequest, never a failure and never an
// unauthenticated resumption; a ticket whose certificate was accepted
// under one trust store is never resumed where the other applies.
func TestResumptionSequence(t *testing.T) {
	p := testpki.New(t)
	// The client keys sessions by its certificate ("ID key") so that it
	// never resumes across a change of certificate itself; these steps
	// offer tickets across certificates on purpose, to test the server's
	// rules, so the cache drops that part of the key.
	cache := func() utls.ClientSessionCache { return anyCertCache{utls.NewLRUClientSessionCache(8)} }
	with := func(c utls.ClientSessionCache, cert string, flagged bool) client.Config {
		cfg := withCert(p, cert)
		if flagged {
			cfg.Flags = tlsflags.Must(80)
		}
		cfg.Resume, cfg.SessionCache = true, c
		return cfg
	}
	withBot := Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA, BotCA: p.BotCA}

	// No bot store; flagged clients are not required to be asked of
	// unflagged ones.
	for _, policy := range []Policy{PolicyRequest, PolicyVerify, PolicyRequire} {
		t.Run(policy.String(), func(t *testing.T) {
			ts := startServer(t, p, Config{Policy: policy})
			c := cache()
			runSteps(t, ts, p, []resumeStep{
				{"Unflagged_Full", with(c, "", false), false, false, "", false},
				{"Unflagged_Resumes", with(c, "", false), true, false, "", false},
				{"Flagged_DeclinesCertlessTicket", with(c, "valid", true), false, true, "client.example", true},
				{"Flagged_ResumesCertTicket", with(c, "valid", true), true, false, "client.example", true},
				// An unflagged config asks for no certificate: a
				// certificate session is not resumed there.
				{"Unflagged_CertTicket_FullHandshake", with(c, "", false), false, false, "", false},
				{"Flagged_DeclinesCertlessTicketAgain", with(c, "valid", true), false, true, "client.example", true},
				{"Flagged_Resumes", with(c, "valid", true), true, false, "client.example", true},
				{"UnflaggedWithCert_CertTicket_FullHandshake", with(c, "valid", false), false, false, "", false},
			})

			// A flagged client without a certificate, holding a
			// certificate-less ticket: full handshake, asked, and
			// (under require) refused with certificate_required, never
			// unexpected_message.
			fresh := cache()
			fetch(t, ts, p, with(fresh, "", false), "/debug")
			o := fetch(t, ts, p, with(fresh, "", true), "/debug")
			if policy == PolicyRequire {
				if o.err == nil || !strings.Contains(o.err.Error(), "certificate_required") {
					t.Errorf("flagged, no cert, certless ticket under require: %v", o.err)
				}
			} else if o.err != nil || o.hs.Resumed || !o.hs.CertRequested {
				t.Errorf("flagged, no cert, certless ticket: err %v resumed %v requested %v", o.err, o.hs.Resumed, o.hs.CertRequested)
			}
		})
	}

	t.Run("always", func(t *testing.T) {
		ts := startServer(t, p, Config{Policy: PolicyAlways})
		c := cache()
		runSteps(t, ts, p, []resumeStep{
			{"Unflagged_Full", with(c, "valid", false), false, true, "client.example", true},
			{"Unflagged_Resumes", with(c, "valid", false), true, false, "client.example", true},
			// One store for both: the session's certificate was
			// checked against the store that applies to flagged
			// clients too.
			{"Flagged_ResumesSameStore", with(c, "valid", true), true, false, "client.example", true},
			{"Flagged_ResumesAgain", with(c, "valid", true), true, false, "client.example", true},
		})
	})

	// A bot store: flagged clients are checked against it alone.
	for _, policy := range []Policy{PolicyRequest, PolicyVerify, PolicyRequire} {
		t.Run(policy.String()+"_BotStore", func(t *testing.T) {
			ts := startServer(t, p, Config{Policy: policy, Files: withBot})
			c := cache()
			runSteps(t, ts, p, []resumeStep{
				{"Flagged_Full", with(c, "bot", true), false, true, "bot.example", true},
				{"Flagged_Resumes", with(c, "bot", true), true, false, "bot.example", true},
				{"UnflaggedWithCert_BotTicket_FullHandshake", with(c, "valid", false), false, false, "", false},
				{"Flagged_DeclinesCertlessTicket", with(c, "bot", true), false, true, "bot.example", true},
				{"Flagged_ResumesAgain", with(c, "bot", true), true, false, "bot.example", true},
			})
		})
	}

	// Under always with a bot store, a bot session must not resume on an
	// unflagged connection (checked against the client CAs), nor the
	// reverse: each would fail with bad_certificate on every retry.
	t.Run("always_BotStore", func(t *testing.T) {
		ts := startServer(t, p, Config{Policy: PolicyAlways, Files: withBot})
		c := cache()
		runSteps(t, ts, p, []resumeStep{
			{"Flagged_Full", with(c, "bot", true), false, true, "bot.example", true},
			{"Flagged_Resumes", with(c, "bot", true), true, false, "bot.example", true},
			{"Unflagged_BotTicket_FullHandshake", with(c, "valid", false), false, true, "client.example", true},
			{"Unflagged_Resumes", with(c, "valid", false), true, false, "client.example", true},
			{"Flagged_ClientTicket_FullHandshake", with(c, "bot", true), false, true, "bot.example", true},
			{"Flagged_ResumesAgain", with(c, "bot", true), true, false, "bot.example", true},
		})
	})
}

// TestResumptionAcrossReload: a reload with the same roots keeps
// certificate tickets valid (instances with the same files agree); a change
// of roots declines them, so the certificate is checked again.
func TestResumptionAcrossReload(t *testing.T) {
	p, other := testpki.New(t), testpki.New(t)
	files := livePKI(t, p)
	ts := startServer(t, p, Config{Policy: PolicyRequire, Files: files})
	flagged := withCert(p, "valid", 80)
	flagged.Resume, flagged.SessionCache = true, utls.NewLRUClientSessionCache(8)
	runSteps(t, ts, p, []resumeStep{
		{"Full", flagged, false, true, "client.example", true},
		{"Resumes", flagged, true, false, "client.example", true},
	})
	if err := ts.Reload("test"); err != nil {
		t.Fatal(err)
	}
	runSteps(t, ts, p, []resumeStep{{"SameRoots_Resumes", flagged, true, false, "client.example", true}})

	oldPEM, _ := os.ReadFile(p.RootCA)
	otherPEM, _ := os.ReadFile(other.RootCA)
	writeRename(t, files.ClientCA, append(oldPEM, otherPEM...))
	if err := ts.Reload("test"); err != nil {
		t.Fatal(err)
	}
	runSteps(t, ts, p, []resumeStep{
		{"NewRoots_FullHandshake", flagged, false, true, "client.example", true},
		{"NewRoots_Resumes", flagged, true, false, "client.example", true},
	})
}

// TestTicketKeysShared: two servers that load the same files and the same
// ticket keys resume each other's sessions, certificate sessions included;
// a server with keys of its own does not. (The client's session cache is
// keyed by server name, 127.0.0.1 for all three, as behind a load
// balancer.)
func TestTicketKeysShared(t *testing.T) {
	p := testpki.New(t)
	keys := filepath.Join(t.TempDir(), "ticket.keys")
	if err := os.WriteFile(keys, []byte("# fleet\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := Files{Cert: p.ServerCert, Key: p.ServerKey, ClientCA: p.RootCA, TicketKeys: keys}
	a := startServer(t, p, Config{Policy: PolicyRequire, Files: files})
	b := startServer(t, p, Config{Policy: PolicyRequire, Files: files})
	own := startServer(t, p, Config{Policy: PolicyRequire})
	flagged := withCert(p, "valid", 80)
	flagged.Resume, flagged.SessionCache = true, utls.NewLRUClientSessionCache(8)
	runSteps(t, a, p, []resumeStep{{"A_Full", flagged, false, true, "client.example", true}})
	runSteps(t, b, p, []resumeStep{{"B_ResumesA", flagged, true, false, "client.example", true}})
	runSteps(t, a, p, []resumeStep{{"A_ResumesB", flagged, true, false, "client.example", true}})
	runSteps(t, own, p, []resumeStep{{"OwnKeys_FullHandshake", flagged, false, true, "client.example", true}})

	// Rotation on A: a new key first, the old one second: tickets made
	// with the old key still resume; with the old key dropped, they do
	// not.
	runSteps(t, b, p, []resumeStep{{"B_Full_OldKey", flagged, false, true, "client.example", true}})
	const newKey = "//////////////////////////////////////////8="
	writeRename(t, keys, []byte(newKey+"\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"))
	if err := a.Reload("test"); err != nil {
		t.Fatal(err)
	}
	runSteps(t, a, p, []resumeStep{{"A_NewFirst_OldDecrypts", flagged, true, false, "client.example", true}})
	runSteps(t, b, p, []resumeStep{{"B_Full_OldKeyAgain", flagged, false, true, "client.example", true}})
	writeRename(t, keys, []byte(newKey+"\n"))
	if err := a.Reload("test"); err != nil {
		t.Fatal(err)
	}
	runSteps(t, a, p, []resumeStep{{"A_OldKeyDropped_FullHandshake", flagged, false, true, "client.example", true}})
}

// anyCertCache shares sessions between client certificates: it drops the
// certificate's part of the client's session keys.
type anyCertCache struct{ utls.ClientSessionCache }

func (c anyCertCache) Get(key string) (*utls.ClientSessionState, bool) {
	return c.ClientSessionCache.Get(serverKey(key))
}

func (c anyCertCache) Put(key string, cs *utls.ClientSessionState) {
	c.ClientSessionCache.Put(serverKey(key), cs)
}

func serverKey(key string) string {
	if _, k, ok := strings.Cut(key, " "); ok {
		return k
	}
	return key
}
