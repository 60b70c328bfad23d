package server

import (
	"strings"
	"testing"

	utls "github.com/refraction-networking/utls"

	"github.com/req-mtls/req-mtls/internal/client"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/tlsflags"
)

// TestResumptionSequence walks the sequences that break the reference fork:
// a flagged client resuming a session that carried no certificate must get
// a full handshake with a CertificateRequest, never a failure and never an
// unauthenticated resumption.
func TestResumptionSequence(t *testing.T) {
	for _, policy := range []Policy{PolicyRequest, PolicyVerify, PolicyRequire} {
		t.Run(policy.String(), func(t *testing.T) {
			p := testpki.New(t)
			ts := startServer(t, p, Config{Policy: policy})
			cache := utls.NewLRUClientSessionCache(8)
			unflagged := client.Config{Resume: true, SessionCache: cache}
			flagged := client.Config{Resume: true, SessionCache: cache, Flags: tlsflags.Must(80),
				CertFile: p.Clients["valid"][0], KeyFile: p.Clients["valid"][1]}
			flaggedNoCert := client.Config{Resume: true, SessionCache: cache, Flags: tlsflags.Must(80)}

			steps := []struct {
				name       string
				cfg        client.Config
				resumed    bool
				requested  bool
				wantSuffix string
			}{
				{"Unflagged_Full", unflagged, false, false, "Peer certificate received: false\n"},
				{"Unflagged_Resumes", unflagged, true, false, "Peer certificate received: false\n"},
				{"Flagged_DeclinesCertlessTicket", flagged, false, true, "Cert received: client.example\nCert validated: true\n"},
				{"Flagged_ResumesCertTicket", flagged, true, false, "Cert received: client.example\nCert validated: true\n"},
				// crypto/tls never resumes a certificate session on a
				// config that does not ask for certificates: the
				// unflagged client gets a plain full handshake.
				{"Unflagged_CertTicket_FullHandshake", unflagged, false, false, "Peer certificate received: false\n"},
				// The cache now holds that certificate-less ticket.
				{"Flagged_DeclinesCertlessTicketAgain", flagged, false, true, "Cert received: client.example\nCert validated: true\n"},
				{"Flagged_Resumes", flagged, true, false, "Cert received: client.example\nCert validated: true\n"},
			}
			for _, st := range steps {
				o := fetch(t, ts, p, st.cfg, "/debug")
				if o.err != nil {
					t.Fatalf("%s: %v", st.name, o.err)
				}
				if o.hs.Resumed != st.resumed || o.hs.CertRequested != st.requested {
					t.Errorf("%s: resumed %v requested %v, want %v %v", st.name, o.hs.Resumed, o.hs.CertRequested, st.resumed, st.requested)
				}
				if !strings.HasSuffix(o.body, st.wantSuffix) {
					t.Errorf("%s: /debug\n%s\nwant suffix\n%s", st.name, o.body, st.wantSuffix)
				}
			}

			// A flagged client without a certificate, holding a
			// certificate-less ticket: full handshake, asked, and
			// (under require) refused with certificate_required, never
			// unexpected_message.
			fresh := utls.NewLRUClientSessionCache(8)
			fetch(t, ts, p, client.Config{Resume: true, SessionCache: fresh}, "/debug")
			flaggedNoCert.SessionCache = fresh
			o := fetch(t, ts, p, flaggedNoCert, "/debug")
			if policy == PolicyRequire {
				if o.err == nil || !strings.Contains(o.err.Error(), "certificate_required") {
					t.Errorf("flagged, no cert, certless ticket under require: %v", o.err)
				}
			} else if o.err != nil || o.hs.Resumed || !o.hs.CertRequested {
				t.Errorf("flagged, no cert, certless ticket: err %v resumed %v requested %v", o.err, o.hs.Resumed, o.hs.CertRequested)
			}

			// After a reload, a certificate ticket is declined so that the
			// certificate is checked against the new stores.
			if err := ts.Reload("test"); err != nil {
				t.Fatal(err)
			}
			o = fetch(t, ts, p, flagged, "/debug")
			if o.err != nil || o.hs.Resumed || !o.hs.CertRequested {
				t.Errorf("after reload: err %v resumed %v requested %v", o.err, o.hs.Resumed, o.hs.CertRequested)
			}
		})
	}
}
