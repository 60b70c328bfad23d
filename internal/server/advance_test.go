package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/internal/testpki"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// TestAdvanceDecidedByItsEngine: a request whose limit tokens were taken
// in advance is decided by the rules that planned them, even if other
// rules came into force in between (a reload): its answer is the token's
// (a refusal here), and no token is taken again.
func TestAdvanceDecidedByItsEngine(t *testing.T) {
	ts := startServer(t, testpki.New(t), Config{})
	planned, probs := policy.Compile([]policy.Rule{{Name: "slow", Action: "limit", Rate: "1/m", Burst: 1}}, policy.NewLocal(0))
	if probs != nil {
		t.Fatal(probs)
	}
	const agent = "https://a.example"
	adv := planned.NewAdvance(func(agent string) policy.Identity {
		return policy.Identity{Path: "/", Signature: "valid", Agent: agent}
	})
	takes := adv.Plan(agent)
	if len(takes) != 1 {
		t.Fatalf("plan %v, want one token", takes)
	}
	adv.Taken = []policy.Taken{{Take: takes[0], OK: false, Wait: 2 * time.Second}}
	// Other rules now: none.
	ts.SetRules(nil)
	r := httptest.NewRequest("GET", "https://localhost/", nil)
	r = r.WithContext(policy.WithAdvance(context.Background(), adv))
	r = webbotauth.WithResult(r, webbotauth.Result{Status: "valid", Agent: agent})
	rec := httptest.NewRecorder()
	ts.enforce(ts.sites[0], http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) })).ServeHTTP(rec, r)
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "2" {
		t.Errorf("a request whose token was refused in advance, rules reloaded since: %d (Retry-After %q), want 429 from the rules that planned it", rec.Code, rec.Header().Get("Retry-After"))
	}
}
