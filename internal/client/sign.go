package client

import (
	"crypto"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// SignLabel is the label of the Web Bot Auth signature the client adds.
const SignLabel = "sig1"

// Signing configures Web Bot Auth signatures (HTTP Message Signatures,
// RFC 9421, as draft-meunier-webbotauth-httpsig-protocol-00 profiles them)
// on every request.
type Signing struct {
	// Key signs: an Ed25519 crypto.Signer (a KMS's will do).
	Key crypto.Signer
	// Agent is where the key's directory lives (the Signature-Agent
	// field), e.g. "https://bot.example"; empty sends none.
	Agent string
	// AgentDictionary sends Signature-Agent as the working group's
	// dictionary (sig1="URL", covered with key="sig1") rather than the
	// sf-string deployed verifiers read.
	AgentDictionary bool
	// Validity is how long a signature is valid (default 1 minute).
	Validity time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// check says why s cannot sign, or nil.
func (s *Signing) check() error {
	if _, ok := s.Key.Public().(ed25519.PublicKey); !ok {
		return fmt.Errorf("signing key: a %T, want an Ed25519 key", s.Key)
	}
	return nil
}

// sign returns a copy of req with its Signature-Agent, Signature-Input and
// Signature fields set; any it had are replaced.
func (s *Signing) sign(req *http.Request) (*http.Request, error) {
	req = req.Clone(req.Context())
	for _, f := range []string{"Signature", "Signature-Input", "Signature-Agent"} {
		req.Header.Del(f)
	}
	components := []string{"@authority"}
	if s.Agent != "" {
		if s.AgentDictionary {
			req.Header.Set("Signature-Agent", SignLabel+"="+strconv.Quote(s.Agent))
			components = append(components, "signature-agent;key="+SignLabel)
		} else {
			req.Header.Set("Signature-Agent", strconv.Quote(s.Agent))
			components = append(components, "signature-agent")
		}
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	validity := s.Validity
	if validity <= 0 {
		validity = time.Minute
	}
	p, err := httpsig.BotParams(s.Key.Public().(ed25519.PublicKey), now(), validity)
	if err != nil {
		return nil, err
	}
	if err := httpsig.Sign(req, SignLabel, httpsig.NewCovered(components, p), s.Key); err != nil {
		return nil, err
	}
	return req, nil
}

// Sign returns req signed as Config.Signing says, or req itself without
// it.
func (c *Client) Sign(req *http.Request) (*http.Request, error) {
	if c.cfg.Signing == nil {
		return req, nil
	}
	r, err := c.cfg.Signing.sign(req)
	if err != nil {
		return nil, &Error{Err: err, Msg: "sign the request: " + err.Error()}
	}
	return r, nil
}
