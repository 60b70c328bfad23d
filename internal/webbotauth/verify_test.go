package webbotauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dunglas/httpsfv"

	"github.com/req-mtls/req-mtls/internal/httpsig"
)

var now = time.Unix(1800000000, 0)

// signed makes a request to host, signed by key as agent (dict: the
// dictionary spelling), with params p.
func signed(t *testing.T, host string, key ed25519.PrivateKey, agent string, dict bool, p httpsig.Params) *http.Request {
	t.Helper()
	r, _ := http.NewRequest("GET", "https://"+host+"/page", nil)
	components := []string{"@authority"}
	if agent != "" {
		if dict {
			r.Header.Set("Signature-Agent", "sig1="+strconv.Quote(agent))
			components = append(components, "signature-agent;key=sig1")
		} else {
			r.Header.Set("Signature-Agent", strconv.Quote(agent))
			components = append(components, "signature-agent")
		}
	}
	if err := httpsig.Sign(r, "sig1", httpsig.NewCovered(components, p), key); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerifier(t *testing.T) {
	_, botKey, _ := ed25519.GenerateKey(nil)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	_, strangerKey, _ := ed25519.GenerateKey(nil)
	bot := &Agent{URL: "https://bot.example", Keys: map[string]crypto.PublicKey{httpsig.Thumbprint(botKey.Public().(ed25519.PublicKey)): botKey.Public().(ed25519.PublicKey)}}
	other := &Agent{URL: "https://other.example", Keys: map[string]crypto.PublicKey{httpsig.Thumbprint(otherKey.Public().(ed25519.PublicKey)): otherKey.Public().(ed25519.PublicKey)}}
	params := func(k ed25519.PrivateKey) httpsig.Params {
		p, err := httpsig.BotParams(k.Public().(ed25519.PublicKey), now, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	v := New(Config{Agents: []*Agent{bot, other}, Now: func() time.Time { return now }})
	replay := signed(t, "site.example", botKey, bot.URL, false, params(botKey))
	for _, tc := range []struct {
		name string
		r    func() *http.Request
		want string // status, and the reason's start for invalid ones
	}{
		{"Unsigned", func() *http.Request { r, _ := http.NewRequest("GET", "https://site.example/", nil); return r }, "none"},
		{"ValidString", func() *http.Request { return signed(t, "site.example", botKey, bot.URL, false, params(botKey)) }, "valid https://bot.example"},
		{"ValidDictionary", func() *http.Request { return signed(t, "site.example", botKey, bot.URL, true, params(botKey)) }, "valid https://bot.example"},
		{"ValidNoAgentField", func() *http.Request { return signed(t, "site.example", otherKey, "", false, params(otherKey)) }, "valid https://other.example"},
		{"Expired", func() *http.Request {
			p := params(botKey)
			p.Created, p.Expires = now.Add(-time.Hour), now.Add(-10*time.Minute)
			return signed(t, "site.example", botKey, bot.URL, false, p)
		}, "invalid expired"},
		{"OtherAuthority", func() *http.Request {
			r := signed(t, "site.example", botKey, bot.URL, false, params(botKey))
			r.Host = "victim.example" // replayed to another site
			return r
		}, "invalid signature does not verify"},
		{"UnknownKey", func() *http.Request { return signed(t, "site.example", strangerKey, "", false, params(strangerKey)) }, "invalid unknown key"},
		{"UntrustedAgent", func() *http.Request {
			return signed(t, "site.example", strangerKey, "https://stranger.example", false, params(strangerKey))
		}, "invalid agent not trusted"},
		{"KeyUnderAnotherAgent", func() *http.Request { return signed(t, "site.example", botKey, other.URL, false, params(botKey)) }, "invalid unknown key for agent"},
		{"TamperedAgent", func() *http.Request {
			r := signed(t, "site.example", botKey, bot.URL, false, params(botKey))
			r.Header.Set("Signature-Agent", strconv.Quote(other.URL))
			return r
		}, "invalid unknown key for agent"},
		{"AgentNotCovered", func() *http.Request {
			r, _ := http.NewRequest("GET", "https://site.example/page", nil)
			httpsig.Sign(r, "sig1", httpsig.NewCovered([]string{"@authority"}, params(botKey)), botKey)
			r.Header.Set("Signature-Agent", strconv.Quote(bot.URL))
			return r
		}, "invalid Signature-Agent is sent but not covered"},
		{"FirstUseOfANonce", func() *http.Request { return replay }, "valid https://bot.example"},
		{"ReplayedNonce", func() *http.Request { return replay }, "invalid nonce replayed"},
		{"OtherTagIgnored", func() *http.Request {
			r, _ := http.NewRequest("GET", "https://site.example/page", nil)
			p := params(botKey)
			p.Tag = "something-else"
			httpsig.Sign(r, "sig1", httpsig.NewCovered([]string{"@authority"}, p), botKey)
			return r
		}, "none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := v.Verify(tc.r())
			got := res.Status
			switch res.Status {
			case "valid":
				got += " " + res.Agent
			case "invalid":
				got += " " + res.Reason
			}
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q...", got, tc.want)
			}
		})
	}
}

// TestParseJWKSThumbprints: keys are indexed by their RFC 7638
// thumbprints: the RFC's own RSA example (Section 3.1), and the Ed25519
// key of RFC 8037, Appendix A.3.
func TestParseJWKSThumbprints(t *testing.T) {
	keys, err := ParseJWKS([]byte(`{"keys":[
	{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"},
	{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
	{"kty":"oct","k":"c2VjcmV0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"} {
		if _, ok := keys[id]; !ok {
			t.Errorf("no key %s among %d", id, len(keys))
		}
	}
	if len(keys) != 2 {
		t.Errorf("%d keys, want 2 (the symmetric one passed over)", len(keys))
	}
}

// TestOtherAlgorithms: an agent whose directory holds ECDSA P-256 or RSA
// keys is verified with RFC 9421's ecdsa-p256-sha256 and rsa-pss-sha512.
func TestOtherAlgorithms(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	b64 := base64.RawURLEncoding.EncodeToString
	ecBytes, _ := ec.PublicKey.ECDH()
	raw := ecBytes.Bytes()
	jwks := `{"keys":[{"kty":"EC","crv":"P-256","x":"` + b64(raw[1:33]) + `","y":"` + b64(raw[33:]) + `"},` +
		`{"kty":"RSA","n":"` + b64(rk.N.Bytes()) + `","e":"AQAB"}]}`
	keys, err := ParseJWKS([]byte(jwks))
	if err != nil || len(keys) != 2 {
		t.Fatalf("%d keys, %v", len(keys), err)
	}
	v := New(Config{Agents: []*Agent{{URL: "https://bot.example", Keys: keys}}, Now: func() time.Time { return now }})
	for id, pub := range keys {
		alg := httpsig.AlgOf(pub)
		r, _ := http.NewRequest("GET", "https://site.example/", nil)
		r.Header.Set("Signature-Agent", `"https://bot.example"`)
		p := httpsig.Params{Created: now, Expires: now.Add(time.Minute), KeyID: id, Alg: alg, Tag: Tag}
		covered := httpsig.NewCovered([]string{"@authority", "signature-agent"}, p)
		base, _ := httpsig.Base(r, covered)
		var sig []byte
		switch alg {
		case "ecdsa-p256-sha256":
			sum := sha256.Sum256([]byte(base))
			rr, ss, _ := ecdsa.Sign(rand.Reader, ec, sum[:])
			sig = append(rr.FillBytes(make([]byte, 32)), ss.FillBytes(make([]byte, 32))...)
		case "rsa-pss-sha512":
			sum := sha512.Sum512([]byte(base))
			sig, _ = rsa.SignPSS(rand.Reader, rk, crypto.SHA512, sum[:], &rsa.PSSOptions{SaltLength: 64})
		}
		in, _ := httpsfv.Marshal(dictOf("sig1", covered))
		r.Header.Set("Signature-Input", in)
		r.Header.Set("Signature", "sig1=:"+base64.StdEncoding.EncodeToString(sig)+":")
		if res := v.Verify(r); res.Status != "valid" {
			t.Errorf("%s: %+v", alg, res)
		}
		r.Header.Set("Signature-Agent", `"https://bot.example/x"`)
		if res := v.Verify(r); res.Status == "valid" {
			t.Errorf("%s: a changed agent verified", alg)
		}
	}
}

func dictOf(label string, l httpsfv.InnerList) *httpsfv.Dictionary {
	d := httpsfv.NewDictionary()
	d.Add(label, l)
	return d
}

// TestSharedKeyNeedsSignatureAgent: two agents list the same key. With
// Signature-Agent the signature is the named agent's, whichever is listed
// first; without it the key names no one agent and is not credited to
// either.
func TestSharedKeyNeedsSignatureAgent(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	pub := k.Public().(ed25519.PublicKey)
	id := httpsig.Thumbprint(pub)
	first := &Agent{URL: "https://first.example", Keys: map[string]crypto.PublicKey{id: pub}}
	second := &Agent{URL: "https://second.example", Keys: map[string]crypto.PublicKey{id: pub}}
	v := New(Config{Agents: []*Agent{first, second}, Now: func() time.Time { return now }})
	p := httpsig.Params{Created: now, Expires: now.Add(time.Minute), KeyID: id, Alg: "ed25519", Tag: Tag}
	for _, tc := range []struct {
		name, agent string
		want        Result
	}{
		{"NamedSecond", second.URL, Result{Status: "valid", Agent: second.URL, KeyID: id}},
		{"NamedFirst", first.URL, Result{Status: "valid", Agent: first.URL, KeyID: id}},
		{"Unnamed", "", Result{Status: "invalid", Reason: "key listed by more than one agent: send Signature-Agent"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := v.Verify(signed(t, "site.example", k, tc.agent, true, p)); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestEverySignatureChecked: a request carrying a valid Web Bot Auth
// signature is valid whatever other Web Bot Auth signatures it carries
// (here one by an unknown key, under a label that sorts first); with no
// valid one, the reason is the first label's.
func TestEverySignatureChecked(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	_, stranger, _ := ed25519.GenerateKey(nil)
	pub := k.Public().(ed25519.PublicKey)
	bot := &Agent{URL: "https://bot.example", Keys: map[string]crypto.PublicKey{httpsig.Thumbprint(pub): pub}}
	v := New(Config{Agents: []*Agent{bot}, Now: func() time.Time { return now }})
	params := func(k ed25519.PrivateKey) httpsig.Params {
		return httpsig.Params{Created: now, Expires: now.Add(time.Minute), KeyID: httpsig.Thumbprint(k.Public().(ed25519.PublicKey)), Alg: "ed25519", Tag: Tag}
	}
	r := signed(t, "site.example", k, bot.URL, false, params(k))
	if err := httpsig.Sign(r, "a", httpsig.NewCovered([]string{"@authority", "signature-agent"}, params(stranger)), stranger); err != nil {
		t.Fatal(err)
	}
	if got := v.Verify(r); got.Status != "valid" || got.Agent != bot.URL {
		t.Errorf("a valid signature beside an unknown key's: %+v", got)
	}
	only, _ := http.NewRequest("GET", "https://site.example/page", nil)
	only.Header.Set("Signature-Agent", strconv.Quote(bot.URL))
	httpsig.Sign(only, "b", httpsig.NewCovered([]string{"@authority", "signature-agent"}, params(stranger)), stranger)
	expired := params(k)
	expired.Created, expired.Expires = now.Add(-time.Hour), now.Add(-30*time.Minute)
	httpsig.Sign(only, "c", httpsig.NewCovered([]string{"@authority", "signature-agent"}, expired), k)
	if got, want := v.Verify(only), (Result{Status: "invalid", Reason: "unknown key for agent https://bot.example"}); got != want {
		t.Errorf("no valid signature: got %+v, want %+v", got, want)
	}
}

// TestAuthorityOfTheConnection: over TLS, the signed @authority must be a
// name the connection was made for (its SNI) or one the site's
// certificate covers; a signature for another site, replayed here in
// absolute form, is invalid.
func TestAuthorityOfTheConnection(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	pub := k.Public().(ed25519.PublicKey)
	bot := &Agent{URL: "https://bot.example", Keys: map[string]crypto.PublicKey{httpsig.Thumbprint(pub): pub}}
	cert := &x509.Certificate{DNSNames: []string{"localhost", "www.site.example"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	for _, tc := range []struct {
		name, authority, sni string
		local                string // the connection's local address, when the test sets one
		withCert             bool
		want                 string
	}{
		{"SNI", "site.example", "site.example", "", false, "valid"},
		{"SNIWithPort", "site.example:8443", "site.example", "", false, "valid"},
		{"SNICase", "Site.Example", "site.example", "", false, "valid"},
		{"OtherThanSNI", "evil.example", "localhost", "", false, `invalid @authority "evil.example" is not a name this connection was made for`},
		{"OtherThanSNIAndCertificate", "evil.example", "localhost", "", true, `invalid @authority "evil.example" is not a name this connection was made for`},
		{"CoveredByTheCertificate", "www.site.example", "localhost", "", true, "valid"},
		{"NoSNICertificateIP", "127.0.0.1:8443", "", "", true, "valid"},
		{"NoSNILocalAddress", "127.0.0.1:8443", "", "127.0.0.1:8443", false, "valid"},
		{"NoSNIOtherName", "evil.example", "", "127.0.0.1:8443", false, `invalid @authority "evil.example" is not a name this connection was made for`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := New(Config{Agents: []*Agent{bot}, Now: func() time.Time { return now }})
			if tc.withCert {
				v.SetSiteCertificate(func() *x509.Certificate { return cert })
			}
			p := httpsig.Params{Created: now, Expires: now.Add(time.Minute), KeyID: httpsig.Thumbprint(pub), Alg: "ed25519", Tag: Tag}
			r := signed(t, tc.authority, k, bot.URL, true, p)
			r.TLS = &tls.ConnectionState{ServerName: tc.sni}
			if tc.local != "" {
				addr, _ := net.ResolveTCPAddr("tcp", tc.local)
				r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, addr))
			}
			got := v.Verify(r)
			if s := strings.TrimSpace(got.Status + " " + got.Reason); s != tc.want {
				t.Errorf("got %q, want %q", s, tc.want)
			}
		})
	}
}

// TestInvertedWindow: a signature whose expires comes before its created
// has no moment of validity, however near both are to now.
func TestInvertedWindow(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	pub := k.Public().(ed25519.PublicKey)
	bot := &Agent{URL: "https://bot.example", Keys: map[string]crypto.PublicKey{httpsig.Thumbprint(pub): pub}}
	v := New(Config{Agents: []*Agent{bot}, Now: func() time.Time { return now }})
	p := httpsig.Params{Created: now, Expires: now.Add(-30 * time.Second), KeyID: httpsig.Thumbprint(pub), Alg: "ed25519", Tag: Tag}
	if got, want := v.Verify(signed(t, "site.example", k, bot.URL, true, p)), (Result{Status: "invalid", Reason: "created after expires"}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestCavageSignatureIsNone: a Signature field alone, in the older
// draft-cavage-http-signatures form that some clients still send, is not
// an RFC 9421 signature (which always comes with Signature-Input): the
// request carries no Web Bot Auth signature, rather than a bad one.
func TestCavageSignatureIsNone(t *testing.T) {
	v := New(Config{Agents: []*Agent{{URL: "https://bot.example", Keys: map[string]crypto.PublicKey{}}}, Now: func() time.Time { return now }})
	r, _ := http.NewRequest("GET", "https://site.example/", nil)
	r.Header.Set("Signature", `keyId="rsa-key-1",algorithm="hs2019",headers="(request-target) host date",signature="c2lnbmF0dXJl"`)
	if got := v.Verify(r); got != (Result{Status: "none"}) {
		t.Errorf("got %+v, want none", got)
	}
}

// TestUnpaddedSignature: a signature whose byte sequence comes without
// base64's "=" padding is read (RFC 8941, Section 4.2.7: parsers SHOULD
// NOT fail when the padding is absent).
func TestUnpaddedSignature(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	pub := k.Public().(ed25519.PublicKey)
	bot := &Agent{URL: "https://bot.example", Keys: map[string]crypto.PublicKey{httpsig.Thumbprint(pub): pub}}
	v := New(Config{Agents: []*Agent{bot}, Now: func() time.Time { return now }})
	p := httpsig.Params{Created: now, Expires: now.Add(time.Minute), KeyID: httpsig.Thumbprint(pub), Alg: "ed25519", Tag: Tag}
	r := signed(t, "site.example", k, bot.URL, true, p)
	padded := r.Header.Get("Signature")
	unpadded := strings.Replace(padded, "==:", ":", 1)
	if unpadded == padded {
		t.Fatalf("no padding to take off %q", padded)
	}
	r.Header.Set("Signature", unpadded)
	if got := v.Verify(r); got.Status != "valid" {
		t.Errorf("Signature %s: got %+v, want valid", unpadded, got)
	}
}

// TestUnsupportedSignatureAgentIgnored: a Signature-Agent member this
// verifier cannot use (not an https URL: a data: URI carrying keys
// inline, a plain-HTTP URL, a value that is not a string) is ignored: the
// signature is judged as if no Signature-Agent were sent for it, its key
// naming its agent.
func TestUnsupportedSignatureAgentIgnored(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(nil)
	pub := k.Public().(ed25519.PublicKey)
	bot := &Agent{URL: "https://bot.example", Keys: map[string]crypto.PublicKey{httpsig.Thumbprint(pub): pub}}
	v := New(Config{Agents: []*Agent{bot}, Now: func() time.Time { return now }})
	for _, tc := range []struct{ name, member string }{
		{"DataURI", `"data:application/jwk-set+json;base64,e30="`},
		{"PlainHTTP", `"http://bot.example"`},
		{"Token", `bot`},
		{"ByteSequence", `:AAAA:`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := httpsig.Params{Created: now, Expires: now.Add(time.Minute), KeyID: httpsig.Thumbprint(pub), Alg: "ed25519", Tag: Tag}
			r, _ := http.NewRequest("GET", "https://site.example/page", nil)
			r.Header.Set("Signature-Agent", "sig1="+tc.member)
			if err := httpsig.Sign(r, "sig1", httpsig.NewCovered([]string{"@authority", "signature-agent;key=sig1"}, p), k); err != nil {
				t.Fatal(err)
			}
			if got, want := v.Verify(r), (Result{Status: "valid", Agent: bot.URL, KeyID: p.KeyID}); got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}
