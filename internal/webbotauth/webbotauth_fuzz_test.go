package webbotauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

// FuzzSignatureAgent sends arbitrary Signature-Agent field lines on a
// request signed by a trusted agent's key: the field covered (as a string,
// or as the member of label sig1) when it can be, else only @authority.
// The verdict is never "none" for a tagged signature, an invalid one says
// why, and a valid one came from the agent the field names, when it names
// one.
func FuzzSignatureAgent(f *testing.F) {
	const agentURL = "https://bot.example"
	seed := make([]byte, ed25519.SeedSize)
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	agent := &Agent{URL: agentURL, Keys: map[string]crypto.PublicKey{httpsig.Thumbprint(pub): pub}}
	clock := time.Unix(1800000000, 0)
	v := New(Config{Agents: []*Agent{agent}, Now: func() time.Time { return clock }})
	params := httpsig.Params{Created: clock, Expires: clock.Add(time.Minute), Alg: "ed25519",
		KeyID: httpsig.Thumbprint(pub), Tag: Tag} // no nonce: each input is checked afresh

	for _, s := range []struct {
		line1, line2 string
		dict         bool
	}{
		{`"https://bot.example"`, "", false},
		{`sig1="https://bot.example"`, "", true},
		{`sig0="https://other.example", sig1="https://bot.example"`, "", true},
		{`sig0="https://other.example"`, `sig1="https://bot.example"`, true},
		{`"https://other.example"`, "", false},
		{`sig1=?1`, "", true},
		{`sig1=("https://bot.example")`, "", true},
		{`"https://bot.example";x=1`, "", false},
		{`https://bot.example`, "", false},
		{`"https://bot.example"`, `"https://bot.example"`, false},
		{`sig1="a\"b"`, "", true},
		{`sig1`, "", true},
		{``, "", false},
	} {
		f.Add(s.line1, s.line2, s.dict)
	}
	f.Fuzz(func(t *testing.T, line1, line2 string, dict bool) {
		r, err := http.NewRequest("GET", "https://site.example/page", nil)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range []string{line1, line2} {
			if l != "" {
				r.Header.Add("Signature-Agent", l)
				lines = append(lines, l)
			}
		}
		component := "signature-agent"
		if dict {
			component = "signature-agent;key=sig1"
		}
		covered := httpsig.NewCovered([]string{"@authority", component}, params)
		if err := httpsig.Sign(r, "sig1", covered, key); err != nil {
			// The field has no such component: sign without it.
			r.Header.Del("Signature-Input")
			r.Header.Del("Signature")
			if err := httpsig.Sign(r, "sig1", httpsig.NewCovered([]string{"@authority"}, params), key); err != nil {
				t.Fatalf("signing @authority alone: %v", err)
			}
		}
		res := v.Verify(r)
		switch res.Status {
		case "invalid":
			if res.Reason == "" {
				t.Fatalf("Signature-Agent %q: invalid with no reason", lines)
			}
			return
		case "valid":
		default:
			t.Fatalf("Signature-Agent %q: status %q for a tagged signature", lines, res.Status)
		}
		if res.Agent != agentURL || res.KeyID != params.KeyID {
			t.Fatalf("Signature-Agent %q: valid for agent %q key %q", lines, res.Agent, res.KeyID)
		}
		if len(lines) == 0 {
			return // the agent found by its key
		}
		// A valid verdict with the field sent: the field names the agent,
		// as a string or as the member of the signature's label; or it
		// holds a value of a type the verifier does not use (anything
		// but a string holding an https URL), which is ignored, the key
		// alone naming its agent (draft-ietf-webbotauth-httpsig-protocol-01).
		used := func(v any) bool {
			s, ok := v.(string)
			if !ok {
				return false
			}
			u, err := url.Parse(s)
			return err == nil && u.Scheme == "https" && u.Host != ""
		}
		if it, err := httpsfv.UnmarshalItem(lines); err == nil {
			if _, ok := it.Value.(string); ok {
				if it.Value != agentURL && used(it.Value) {
					t.Fatalf("Signature-Agent %q: valid, yet it names another agent", lines)
				}
				return
			}
		}
		d, err := httpsfv.UnmarshalDictionary(lines)
		if err != nil {
			t.Fatalf("Signature-Agent %q: valid, yet neither a string nor a dictionary", lines)
		}
		m, ok := d.Get("sig1")
		if !ok {
			t.Fatalf("Signature-Agent %q: valid, yet no member sig1", lines)
		}
		if it, ok := m.(httpsfv.Item); ok && it.Value != agentURL && used(it.Value) {
			t.Fatalf("Signature-Agent %q: valid, yet member sig1 names another agent: %#v", lines, m)
		}
	})
}

// FuzzParseJWKS reads arbitrary directory bodies: an error, or at least one
// key of a type RFC 9421 verifies with (Ed25519 of 32 bytes, a P-256
// point, RSA), none of which verifies a zero signature.
func FuzzParseJWKS(f *testing.F) {
	for _, s := range []string{
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`,
		`{"keys":[{"kty":"RSA","e":"AQAB","n":"` + strings.Repeat("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4", 7) + `"}]}`,
		`{"keys":[{"kty":"OKP","crv":"X25519","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}]}`,
		`{"keys":[]}`,
		`{"keys":null}`,
		`{"KEYS":[{"KTY":"OKP","CRV":"Ed25519","X":"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}]}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	r, _ := http.NewRequest("GET", "https://site.example/", nil)
	sig := &httpsig.Signature{Label: "sig1", Covered: httpsig.NewCovered([]string{"@authority"}, httpsig.Params{}), Value: make([]byte, 256)}
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseJWKS(data)
		if err != nil {
			if keys != nil {
				t.Fatalf("%q: keys %v beside error %v", data, keys, err)
			}
			if !strings.HasPrefix(err.Error(), "keys: ") && !strings.Contains(err.Error(), "P-256") {
				t.Errorf("%q: error %q does not say it is about the keys", data, err)
			}
			return
		}
		if len(keys) == 0 {
			t.Fatalf("%q: no keys and no error", data)
		}
		for kid, k := range keys {
			if kid == "" {
				t.Fatalf("%q: a key without a thumbprint", data)
			}
			switch k := k.(type) {
			case ed25519.PublicKey:
				if len(k) != ed25519.PublicKeySize {
					t.Fatalf("%q: an Ed25519 key of %d bytes", data, len(k))
				}
			case *ecdsa.PublicKey:
				if k.Curve != elliptic.P256() {
					t.Fatalf("%q: an ECDSA key on %s", data, k.Curve.Params().Name)
				}
			case *rsa.PublicKey:
				// Its size and exponent are not asserted: ParseJWKS
				// counts n's bytes with their leading zeros, and takes
				// e=0 (such a key never verifies, checked below).
				if k.N == nil {
					t.Fatalf("%q: an RSA key without n", data)
				}
			default:
				t.Fatalf("%q: a key of type %T", data, k)
			}
			if httpsig.AlgOf(k) == "" {
				t.Fatalf("%q: a %T key no RFC 9421 algorithm takes", data, k)
			}
			// A signature checked with it fails, and nothing panics.
			if err := httpsig.Verify(r, sig, k); err == nil {
				t.Fatalf("%q: a %T key verifies a zero signature", data, k)
			}
		}
	})
}
