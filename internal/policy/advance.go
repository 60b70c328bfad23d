package policy

import (
	"context"
	"time"
)

// A Take is one token a limit rule takes from a bucket: Limiter.Take's
// arguments, but the time.
type Take struct {
	Key   string
	Rate  float64
	Burst int
}

// A Taken is a Take made ahead of the rules, and its answer.
type Taken struct {
	Take
	OK   bool
	Wait time.Duration
	used bool // by a rule already
}

// An Advance lets a fleet's store take a request's limit tokens ahead of
// the rules, in the round trip that checks its signature's nonce: one call
// to Redis for a signed request instead of two. The server sets Plan on
// the request's context (WithAdvance) before the signature is verified;
// the nonce store, when the nonce is new, takes Plan's tokens and records
// them in Taken; the rules then use Taken in place of their limiter's for
// the same buckets (Identity.Advance).
type Advance struct {
	// Plan returns the tokens the rules would take if the request's
	// signature verified as agent's (Engine.Plan).
	Plan func(agent string) []Take
	// Taken are the tokens taken, set by the store.
	Taken []Taken
	// engine is the engine that planned, and decides the request
	// (NewAdvance): nil for an Advance made by hand.
	engine *Engine
}

// NewAdvance returns the Advance of a request e will decide: identity
// is what the request proves if its signature verifies as agent's. The
// request is decided by e even if other rules come into force meanwhile
// (Engine), so that the tokens planned are the tokens its rules take.
func (e *Engine) NewAdvance(identity func(agent string) Identity) *Advance {
	return &Advance{engine: e, Plan: func(agent string) []Take {
		id := identity(agent)
		return e.Plan(&id)
	}}
}

// Engine is the engine that made a, which decides its request; nil for
// an Advance made by hand.
func (a *Advance) Engine() *Engine { return a.engine }

// Limiter is the limiter whose buckets a's tokens come from: the
// engine's (nil for an Advance made by hand). A store takes them in
// advance only from buckets it holds itself.
func (a *Advance) Limiter() Limiter {
	if a.engine == nil {
		return nil
	}
	return a.engine.lim
}

type advanceKey struct{}

// WithAdvance returns ctx carrying a.
func WithAdvance(ctx context.Context, a *Advance) context.Context {
	return context.WithValue(ctx, advanceKey{}, a)
}

// AdvanceOf returns the Advance ctx carries, or nil.
func AdvanceOf(ctx context.Context) *Advance {
	a, _ := ctx.Value(advanceKey{}).(*Advance)
	return a
}

// Plan returns the tokens Decide would take for id, in order, without
// taking them: those of the limit rules that match, shadow ones included,
// up to and including the first rule that is not a shadow.
func (e *Engine) Plan(id *Identity) []Take {
	if e == nil || !e.limits {
		return nil
	}
	var takes []Take
	for i := range e.rules {
		r := &e.rules[i]
		if !r.matches(id) {
			continue
		}
		if r.action == Limit {
			takes = append(takes, r.take(id))
		}
		if !r.Shadow {
			break
		}
	}
	return takes
}

// HasLimits reports whether any rule limits.
func (e *Engine) HasLimits() bool { return e != nil && e.limits }

// take is the token r takes for id.
func (r *rule) take(id *Identity) Take {
	return Take{Key: r.bucket + id.limitKey(), Rate: r.rate, Burst: r.Burst}
}

// takeAdvanced returns the answer of t taken in advance, using it up, if
// id.Advance holds one.
func (id *Identity) takeAdvanced(t Take) (ok bool, wait time.Duration, found bool) {
	for i := range id.Advance {
		if a := &id.Advance[i]; !a.used && a.Take == t {
			a.used = true
			return a.OK, a.Wait, true
		}
	}
	return false, 0, false
}
