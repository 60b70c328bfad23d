package httpsig

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The test key and request of RFC 9421, Appendix B.1.4 and B.2 (a
// published test vector: test-key-ed25519, as its JWK's d and x).
var (
	rfcSeed, _ = base64.RawURLEncoding.DecodeString("n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU")
	rfcPub, _  = base64.RawURLEncoding.DecodeString("JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs")
)

func rfcRequest(t *testing.T) *http.Request {
	t.Helper()
	r, err := http.NewRequest("POST", "http://example.com/foo?param=Value&Pet=dog", strings.NewReader(`{"hello": "world"}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:")
	r.Header.Set("Content-Length", "18")
	return r
}

// TestRFC9421B26: Appendix B.2.6, signing a request using ed25519: the
// signature base, the fields and the signature value are the RFC's, to
// the byte (Ed25519 is deterministic).
func TestRFC9421B26(t *testing.T) {
	key := ed25519.NewKeyFromSeed(rfcSeed)
	if !key.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(rfcPub)) {
		t.Fatal("the test key's seed and public key disagree")
	}
	r := rfcRequest(t)
	covered := NewCovered([]string{"date", "@method", "@path", "@authority", "content-type", "content-length"},
		Params{Created: time.Unix(1618884473, 0), KeyID: "test-key-ed25519"})
	base, err := Base(r, covered)
	if err != nil {
		t.Fatal(err)
	}
	wantBase := `"date": Tue, 20 Apr 2021 02:07:55 GMT
"@method": POST
"@path": /foo
"@authority": example.com
"content-type": application/json
"content-length": 18
"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`
	if base != wantBase {
		t.Fatalf("signature base:\n%s\nwant:\n%s", base, wantBase)
	}
	if err := Sign(r, "sig-b26", covered, key); err != nil {
		t.Fatal(err)
	}
	if got, want := r.Header.Get("Signature-Input"), `sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"`; got != want {
		t.Errorf("Signature-Input %s\nwant %s", got, want)
	}
	if got, want := r.Header.Get("Signature"), "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"; got != want {
		t.Errorf("Signature %s\nwant %s", got, want)
	}
	// And it verifies, read back from the fields.
	sigs, err := Parse(r.Header)
	if err != nil {
		t.Fatal(err)
	}
	s := sigs["sig-b26"]
	if s == nil || s.Params.KeyID != "test-key-ed25519" || s.Params.Created.Unix() != 1618884473 {
		t.Fatalf("parsed %+v", s)
	}
	if err := Verify(r, s, ed25519.PublicKey(rfcPub)); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyRejects: whatever the signature covers cannot change, and a
// signature must be whole and of its label.
func TestVerifyRejects(t *testing.T) {
	key := ed25519.NewKeyFromSeed(rfcSeed)
	sign := func() *http.Request {
		r := rfcRequest(t)
		r.Header.Set("Signature-Agent", `"https://bot.example"`)
		covered := NewCovered([]string{"@authority", "signature-agent"}, Params{Created: time.Unix(1700000000, 0), Tag: "web-bot-auth", Alg: "ed25519"})
		if err := Sign(r, "sig1", covered, key); err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name   string
		tamper func(r *http.Request)
		want   string
	}{
		{"Untouched", func(*http.Request) {}, ""},
		{"OtherAuthority", func(r *http.Request) { r.Host = "other.example" }, "does not verify"},
		{"CoveredFieldChanged", func(r *http.Request) { r.Header.Set("Signature-Agent", `"https://evil.example"`) }, "does not verify"},
		{"CoveredFieldRemoved", func(r *http.Request) { r.Header.Del("Signature-Agent") }, "not in the request"},
		{"UncoveredFieldChanged", func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }, ""},
		{"ParamsChanged", func(r *http.Request) {
			r.Header.Set("Signature-Input", strings.Replace(r.Header.Get("Signature-Input"), "1700000000", "1700000001", 1))
		}, "does not verify"},
		{"LabelMissing", func(r *http.Request) { r.Header.Set("Signature", "other=:AAAA:") }, "no Signature of that label"},
		{"NotADictionary", func(r *http.Request) { r.Header.Set("Signature-Input", "sig1=(") }, "Signature-Input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := sign()
			tc.tamper(r)
			sigs, err := Parse(r.Header)
			if err == nil {
				err = Verify(r, sigs["sig1"], ed25519.PublicKey(rfcPub))
			}
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// TestDictionaryMember: a member of a dictionary field (key=) is covered by
// its serialized value, as the working group's Signature-Agent is.
func TestDictionaryMember(t *testing.T) {
	r, _ := http.NewRequest("GET", "https://site.example/x", nil)
	r.Header.Set("Signature-Agent", `sig1="https://bot.example", sig2="https://other.example"`)
	base, err := Base(r, NewCovered([]string{"@authority", "signature-agent;key=sig1"}, Params{Created: time.Unix(1, 0)}))
	if err != nil {
		t.Fatal(err)
	}
	want := `"@authority": site.example
"signature-agent";key="sig1": "https://bot.example"
"@signature-params": ("@authority" "signature-agent";key="sig1");created=1`
	if base != want {
		t.Errorf("base:\n%s\nwant:\n%s", base, want)
	}
}

// FuzzParse: whatever the fields hold, parsing never panics, and a
// signature that parses gives a base or an error, never a panic.
func FuzzParse(f *testing.F) {
	f.Add(`sig1=("@authority" "signature-agent");created=1;keyid="k";tag="web-bot-auth"`, `sig1=:AAAA:`)
	f.Add(`sig1=("@method" "x";key="a");created=1`, `sig1=:AAAA:`)
	f.Add(`sig1=1`, `sig1=2`)
	f.Fuzz(func(t *testing.T, input, sig string) {
		h := http.Header{}
		h.Set("Signature-Input", input)
		h.Set("Signature", sig)
		sigs, err := Parse(h)
		if err != nil {
			return
		}
		r, _ := http.NewRequest("GET", "https://site.example/", nil)
		r.Header = h
		for _, s := range sigs {
			Base(r, s.Covered)
		}
	})
}

// TestThumbprint: RFC 8037, Appendix A.3, the thumbprint of its Ed25519
// example key.
func TestThumbprint(t *testing.T) {
	x, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	if got := Thumbprint(ed25519.PublicKey(x)); got != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" {
		t.Errorf("thumbprint %s", got)
	}
}

// TestCheckContentDigest: RFC 9530's example body, {"hello": "world"},
// and its digests (Section 2 and Appendix B).
func TestCheckContentDigest(t *testing.T) {
	body := []byte(`{"hello": "world"}`)
	for _, tc := range []struct {
		name, field, err string
	}{
		{"SHA256", `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:`, ""},
		{"SHA512", `sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:`, ""},
		{"Both", `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:`, ""},
		{"UnknownBeside", `md5=:AAAA:, sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:`, ""},
		{"None", ``, ""},
		{"Wrong", `sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:`, "Content-Digest sha-256: not the digest of the body"},
		{"OneWrong", `sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:AAAA:`, "Content-Digest sha-512: not the digest of the body"},
		{"OnlyUnknown", `md5=:AAAA:`, "Content-Digest: no sha-256 or sha-512 member"},
		{"NotBytes", `sha-256="x"`, "Content-Digest sha-256: not a byte sequence"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.field != "" {
				h.Set("Content-Digest", tc.field)
			}
			err := CheckContentDigest(h, body)
			if got := fmt.Sprint(err); tc.err == "" && err != nil || tc.err != "" && got != tc.err {
				t.Errorf("got %v, want %q", err, tc.err)
			}
		})
	}
}

// TestResponseComponents: a response's signature takes components with
// req from the request and the others from the response (RFC 9421,
// Section 2.4), @status included.
func TestResponseComponents(t *testing.T) {
	r, _ := http.NewRequest("GET", "https://agent.example/.well-known/x", nil)
	r.Header.Set("Accept", "application/json")
	resp := &Response{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}, "Accept": {"not the request's"}}}
	covered := NewCovered([]string{"@authority;req", "accept;req", "content-type", "@status"}, Params{})
	got, err := ResponseBase(r, resp, covered)
	want := `"@authority";req: agent.example` + "\n" + `"accept";req: application/json` + "\n" + `"content-type": text/plain` + "\n" + `"@status": 200` + "\n" +
		`"@signature-params": ("@authority";req "accept";req "content-type" "@status")`
	if err != nil || got != want {
		t.Errorf("got %q, %v\nwant %q", got, err, want)
	}
	if _, err := ResponseBase(r, resp, NewCovered([]string{"@method"}, Params{})); err == nil {
		t.Error("@method without req in a response's signature was taken")
	}
}

func TestPadByteSequences(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`sig1=:AAA:`, `sig1=:AAA=:`},
		{`sig1=:AA:, sig2=:AAAA:`, `sig1=:AA==:, sig2=:AAAA:`},
		{`sig1=:AAAA:;p="a:b"`, `sig1=:AAAA:;p="a:b"`},
		{`s="x\":y", b=:A:`, `s="x\":y", b=:A===:`},
		{`sig1=:AAA`, `sig1=:AAA`},
	} {
		if got := padByteSequences([]string{tc.in})[0]; got != tc.want {
			t.Errorf("padByteSequences(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
