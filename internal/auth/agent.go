package auth

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/req-mtls/req-mtls/internal/deny"
	"github.com/req-mtls/req-mtls/internal/safetext"
)

// An AgentVoucher says whether a trusted agent vouches for a TLS key: the
// agent's key directory (draft-meunier-webbotauth-httpsig-directory) lists
// it. It never waits on the network: it answers from what it last
// fetched, and may fetch again in the background.
type AgentVoucher interface {
	// VouchTLS returns nil when agent (a URL, compared exactly) is a
	// trusted agent whose directory in force lists pub; ErrNotAgent
	// when agent is not one the site trusts; otherwise why not.
	VouchTLS(agent string, pub crypto.PublicKey) error
}

// ErrNotAgent is an agent URL that no trusted agent has.
var ErrNotAgent = errors.New("not a trusted agent")

// ErrDenied is a certificate the deny list names: refused, as a revoked
// one is, with certificate_revoked.
var ErrDenied = errors.New("denied")

// verdict is the outcome of checking one client certificate chain.
type verdict struct {
	verified []*x509.Certificate // the path that validated, leaf first
	store    StoreKind
	agent    string // the vouching agent's URL, with StoreAgent
	err      error
}

// check decides whether chain is valid for a client (flagged or not)
// under the state st at now: not denied, and either vouched for by a
// trusted agent it names (StoreAgent) or chained to the client's trust
// store, unrevoked. It is the one place that decides: the handshake, the
// recheck of open connections and ValidatesNow call it.
func (a *Authenticator) check(chain []*x509.Certificate, st *state, flagged bool, now time.Time) verdict {
	store := st.storeFor(flagged)
	v := verdict{store: store.ref().kind}
	if len(chain) == 0 {
		v.err = errors.New("no client certificate")
		return v
	}
	leaf := chain[0]
	if why := st.deny.Certificate(leaf); why != "" {
		v.err = fmt.Errorf("%w (%s)", ErrDenied, why)
		return v
	}
	var agentErr error
	if a.cfg.Agents != nil {
		for _, u := range leaf.URIs {
			agent := u.String()
			err := a.cfg.Agents.VouchTLS(agent, leaf.PublicKey)
			if errors.Is(err, ErrNotAgent) {
				continue
			}
			if err == nil {
				err = validateAgentLeaf(leaf, now)
			}
			if err == nil {
				return verdict{verified: []*x509.Certificate{leaf}, store: StoreAgent, agent: agent}
			}
			if agentErr == nil {
				agentErr = fmt.Errorf("agent %s: %w", safetext.Escape(agent), err)
			}
		}
	}
	if store == nil && agentErr == nil && a.cfg.Agents != nil {
		// No CA bundle: agents alone vouch here.
		v.err = errors.New("no trusted agent vouches for the certificate: no subjectAltName URI names one")
		if len(leaf.URIs) > 0 {
			v.err = fmt.Errorf("%s is not a trusted agent", safetext.Escape(leaf.URIs[0].String()))
		}
		return v
	}
	v.verified, v.err = a.verified.validate(chain, store, st.crls, now)
	switch {
	case v.err == nil:
	case agentErr != nil:
		// The certificate names a trusted agent: that is why it was
		// sent, and the reason worth reading.
		v.store, v.err = StoreAgent, agentErr
	case a.cfg.Agents != nil && len(leaf.URIs) > 0:
		v.err = fmt.Errorf("%w; %s is not a trusted agent", v.err, safetext.Escape(leaf.URIs[0].String()))
	}
	return v
}

// validateAgentLeaf checks what an agent's directory does not: the
// certificate is a client certificate (not a CA, clientAuth explicit)
// within its validity dates. Who issued it does not matter; the handshake
// proved its key is held, and the directory that the key belongs to the
// agent.
func validateAgentLeaf(leaf *x509.Certificate, now time.Time) error {
	switch {
	case leaf.IsCA:
		return errors.New("client certificate is a CA certificate")
	case slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		return errors.New("client certificate lacks an explicit clientAuth extended key usage")
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("client certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return fmt.Errorf("client certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Denied returns the deny list in force (nil without Config.DenyFile).
func (a *Authenticator) Denied() *deny.List { return a.state.Load().deny }

// Recheck checks the certificates of open connections again, as a reload
// of the trust stores does: call it when what an AgentVoucher answers has
// changed (an agent's directory withdrew a key).
func (a *Authenticator) Recheck(why string) {
	a.log.Debug("rechecking open connections", "why", why)
	a.recheck(a.state.Load())
}
