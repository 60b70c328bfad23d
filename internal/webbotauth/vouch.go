package webbotauth

import (
	"crypto"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/deny"
	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// kickInterval bounds the refreshes an unknown TLS key asks for: at most
// one per agent in this time, so that a stream of handshakes with keys an
// agent does not list cannot make the site fetch its directory at their
// rate.
const kickInterval = 30 * time.Second

// VouchTLS says whether agent, a trusted agent, vouches for the TLS key
// pub: its directory in force lists it (by RFC 7638 thumbprint). It never
// waits on the network: a key the directory does not list asks for one
// refresh of that agent in the background, at most one per 30 s, so a
// key the agent has just added is found within that time. An agent the
// site does not trust is auth.ErrNotAgent. It makes the Verifier an
// auth.AgentVoucher.
func (v *Verifier) VouchTLS(agentURL string, pub crypto.PublicKey) error {
	a := v.byURL[agentURL]
	if a == nil {
		return auth.ErrNotAgent
	}
	if l := v.denied(); l.Agent(agentURL) {
		return errors.New("the agent is denied")
	}
	thumb, err := httpsig.ThumbprintOf(pub)
	if err != nil {
		return fmt.Errorf("the certificate's key: %w", err)
	}
	if _, ok := a.keysAt(v.cfg.Now())[thumb]; ok {
		return nil
	}
	if a.fetch != nil {
		a.fetch.kick(v.cfg.Now())
		return fmt.Errorf("the key %s is not in the agent's directory", thumb)
	}
	return fmt.Errorf("the key %s is not among the agent's pinned keys", thumb)
}

// kick asks the refresh loop for a fetch now, unless one was asked for
// within kickInterval.
func (f *fetched) kick(now time.Time) {
	f.kickMu.Lock()
	defer f.kickMu.Unlock()
	if !f.lastKick.IsZero() && now.Sub(f.lastKick) < kickInterval {
		return
	}
	f.lastKick = now
	select {
	case f.kicks <- struct{}{}:
	default:
	}
}

// RefreshNow asks for a fetch of every fetched agent's directory at once,
// in the background (on SIGHUP, say): an agent that withdrew a key is
// seen without waiting for its cache lifetime.
func (v *Verifier) RefreshNow() {
	for _, a := range v.cfg.Agents {
		if a.fetch != nil {
			select {
			case a.fetch.kicks <- struct{}{}:
			default:
			}
		}
	}
}

// OnKeysDropped registers f, called after a refresh took away keys that
// were in force (a withdrawn directory, a key no longer listed): a site
// closes the connections whose certificates those keys vouched for.
func (v *Verifier) OnKeysDropped(f func(agent string)) {
	v.hooksMu.Lock()
	defer v.hooksMu.Unlock()
	v.onDropped = append(v.onDropped, f)
}

func (v *Verifier) keysDropped(agent string) {
	v.hooksMu.Lock()
	hooks := v.onDropped
	v.hooksMu.Unlock()
	for _, f := range hooks {
		f(agent)
	}
}

// SetDenyList gives the Verifier the site's deny list in force (f is
// called per signature checked, and may return nil): a signature by a
// listed key (jwk:THUMBPRINT) or agent (agent:URL) is invalid, reason
// "denied".
func (v *Verifier) SetDenyList(f func() *deny.List) { v.deny.Store(&f) }

func (v *Verifier) denied() *deny.List {
	if f := v.deny.Load(); f != nil {
		return (*f)()
	}
	return nil
}

// dropped reports whether next lacks a key of prev.
func dropped(prev, next map[string]crypto.PublicKey) bool {
	for k := range prev {
		if _, ok := next[k]; !ok {
			return true
		}
	}
	return false
}

// vouchState is what a Verifier keeps for VouchTLS and its hooks.
type vouchState struct {
	hooksMu   sync.Mutex
	onDropped []func(agent string)
}
