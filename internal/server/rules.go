package server

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/gateway"
	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// SetRules puts e in force for the requests that come after (nil: no
// rules), on the first site. The engine in force is read once per request.
func (s *Server) SetRules(e *policy.Engine) { s.sites[0].rules.Store(e) }

// SetSitesRules puts engines[i] in force on site i (Config's own first,
// then Config.Sites), every one at once as far as a request can tell: each
// reads its site's once. It refuses a count other than the sites'.
func (s *Server) SetSitesRules(engines []*policy.Engine) error {
	if len(engines) != len(s.sites) {
		return fmt.Errorf("%d sets of rules for %d sites: a change of sites needs a restart", len(engines), len(s.sites))
	}
	for i, e := range engines {
		s.sites[i].rules.Store(e)
	}
	return nil
}

// Limiter is the token buckets of the server's limit rules, for engines
// compiled for SetRules.
func (s *Server) Limiter() policy.Limiter { return s.limiter }

// enforce applies the rules in force to each request before h: a refusal
// is answered here, anything else goes on to h. The verdict is recorded
// on the request's Timing for the access log, and counted.
func (s *Server) enforce(st *site, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := st.rules.Load()
		adv := policy.AdvanceOf(r.Context())
		if adv != nil && adv.Engine() != nil {
			// The rules that planned its tokens decide it, even if
			// others came into force since.
			e = adv.Engine()
		}
		if e == nil || e.Len() == 0 {
			h.ServeHTTP(w, r)
			return
		}
		res, ok := webbotauth.ResultOf(r)
		id := identityWith(r, res, ok)
		if adv != nil {
			// The limit tokens taken for it in advance.
			id.Advance = adv.Taken
		}
		v := e.Decide(&id, time.Now())
		if t := gateway.TimingOf(r); t != nil {
			t.Verdict = v
		}
		if v.Shadow != "" {
			s.metrics.Rule(v.Shadow, v.ShadowAction.String(), true, v.ShadowStatus != 0)
			s.log.Info("shadow rule matched", "rule", v.Shadow, "action", v.ShadowAction.String(),
				"would_answer", v.ShadowStatus, "method", r.Method, "path", r.URL.Path, "client", r.RemoteAddr)
		}
		if v.Rule != "" {
			s.metrics.Rule(v.Rule, v.Action.String(), false, v.Status != 0)
		}
		if v.Status == 0 {
			h.ServeHTTP(w, r)
			return
		}
		hd := w.Header()
		hd.Set("Content-Type", "text/plain; charset=utf-8")
		hd.Set("X-Content-Type-Options", "nosniff")
		if v.RetryAfter > 0 {
			hd.Set("Retry-After", strconv.Itoa(v.RetryAfter))
		}
		if v.AcceptSignature {
			hd.Set("Accept-Signature", acceptSignature)
		}
		w.WriteHeader(v.Status)
		w.Write([]byte(v.Body + "\n"))
	})
}

// acceptSignature is RFC 9421's Accept-Signature (Section 5.1) for what
// Web Bot Auth asks of a signature: @authority covered (and
// Signature-Agent, when the signer sends it), created and expires, and the
// web-bot-auth tag.
var acceptSignature = func() string {
	in := httpsfv.InnerList{Items: []httpsfv.Item{httpsfv.NewItem("@authority"), httpsfv.NewItem("signature-agent")}, Params: httpsfv.NewParams()}
	in.Params.Add("created", true)
	in.Params.Add("expires", true)
	in.Params.Add("tag", "web-bot-auth")
	d := httpsfv.NewDictionary()
	d.Add("sig1", in)
	s, err := httpsfv.Marshal(d)
	if err != nil {
		panic(err) // constant input
	}
	return s
}()

// connIdentity is the connection's part of a request's identity, the same
// on every request of it: read once.
type connIdentity struct {
	cert, store string
	agent       string // the agent that vouched for a valid certificate
	names       []string
	sum         [32]byte
	hasCert     bool
}

type connIdentityKey struct{}

func connIdentityOf(c *auth.Conn) *connIdentity {
	return c.Memo(connIdentityKey{}, func() any {
		ci := &connIdentity{cert: "none"}
		d := c.Decision()
		if d == nil || len(d.Chain) == 0 {
			return ci
		}
		leaf := d.Chain[0]
		ci.hasCert, ci.sum, ci.store = true, sha256.Sum256(leaf.Raw), d.Store.String()
		if d.Err != nil {
			ci.cert = "invalid"
			return ci
		}
		ci.cert = "valid"
		ci.agent = d.Agent
		ci.names = append(ci.names, leaf.DNSNames...)
		for _, u := range leaf.URIs {
			ci.names = append(ci.names, u.String())
		}
		return ci
	}).(*connIdentity)
}

// advance returns the Advance for a signed request on a site whose rules
// limit, for its nonce check to take the tokens its rules will take
// (policy.Advance), or nil; none for a request this site will not serve
// (another site's host: 421, no rule judges it).
func (s *Server) advance(st *site, r *http.Request) *policy.Advance {
	e := st.rules.Load()
	if !e.HasLimits() || r.Header.Get("Signature") == "" || s.misdirectedTo(st, r) {
		return nil
	}
	return e.NewAdvance(func(agent string) policy.Identity {
		return identityWith(r, webbotauth.Result{Status: "valid", Agent: agent}, true)
	})
}

// identityWith is what r proved, as recorded: the handshake's decision on
// its connection, and res as its signature's verdict (hasRes false: none
// recorded).
func identityWith(r *http.Request, res webbotauth.Result, hasRes bool) policy.Identity {
	id := policy.Identity{Method: r.Method, Path: r.URL.Path, Cert: "none", Signature: "none"}
	id.Client, _, _ = net.SplitHostPort(r.RemoteAddr)
	var d *auth.Decision
	if c := ConnOf(r); c != nil {
		ci := connIdentityOf(c)
		id.Cert, id.Store, id.Names, id.CertSHA256, id.HasCert = ci.cert, ci.store, ci.names, ci.sum, ci.hasCert
		// The agent from the TLS layer: the one whose directory vouched
		// for the certificate (a signature's, below, comes first).
		id.Agent = ci.agent
		d = c.Decision()
	}
	if hasRes {
		id.Signature = res.Status
		if res.Status == "valid" {
			id.Agent = res.Agent
			if d != nil && d.Validated() {
				id.SameBot = -1
				if gateway.SameAgent(d, res.Agent) {
					id.SameBot = 1
				}
			}
		}
	}
	return id
}
