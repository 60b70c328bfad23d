package httpsig

// RFC 9421's published examples (Appendix B, Section 2.4), for every
// algorithm Verify supports: the signature base to the byte, and the
// RFC's own signature value verified over it, requests and responses
// (components with req from the request). RSA-PSS and ECDSA signatures
// are not deterministic: the RFC's values are checked, never remade.
//
// Not here: B.2.5 (hmac-sha256: Verify takes public keys only). B.2.2
// covers @query-param, which the package does not compute: it is refused
// with an error that names the component (TestRFC9421Unsupported).

import (
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"
)

// test-key-rsa-pss, RFC 9421, Appendix B.1.2 (its public key).
const rfcRSAPSSPublic = `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAr4tmm3r20Wd/PbqvP1s2
+QEtvpuRaV8Yq40gjUR8y2Rjxa6dpG2GXHbPfvMs8ct+Lh1GH45x28Rw3Ry53mm+
oAXjyQ86OnDkZ5N8lYbggD4O3w6M6pAvLkhk95AndTrifbIFPNU8PPMO7OyrFAHq
gDsznjPFmTOtCEcN2Z1FpWgchwuYLPL+Wokqltd11nqqzi+bJ9cvSKADYdUAAN5W
Utzdpiy6LbTgSxP7ociU4Tn0g5I6aDZJ7A8Lzo0KSyZYoA485mqcO0GVAdVw9lq4
aOT9v6d+nb4bnNkQVklLQ3fVAvJm+xdDOp9LCNCN48V2pnDOkFV6+U9nV5oyc6XI
2wIDAQAB
-----END PUBLIC KEY-----`

// test-key-ecc-p256, RFC 9421, Appendix B.1.3 (its public key).
const rfcP256Public = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqIVYZVLCrPZHGHjP17CTW0/+D9Lf
w0EkjqF7xB4FivAxzic30tMM4GF+hR6Dxh71Z50VGGdldkkDXZCnTNnoXQ==
-----END PUBLIC KEY-----`

func rfcPublicKey(t *testing.T, p string) crypto.PublicKey {
	t.Helper()
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		t.Fatal("test key: no PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rfcVector checks one published example: the base of the signature
// labelled label, as Signature-Input carries it, is wantBase, and the
// RFC's signature value verifies with pub.
func rfcVector(t *testing.T, r *http.Request, label, input, sig, wantBase string, pub crypto.PublicKey) {
	t.Helper()
	r.Header.Set("Signature-Input", input)
	r.Header.Set("Signature", sig)
	sigs, err := Parse(r.Header)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	s := sigs[label]
	if s == nil {
		t.Fatalf("no signature %s parsed", label)
	}
	base, err := Base(r, s.Covered)
	if err != nil {
		t.Fatalf("Base: %v", err)
	}
	if base != wantBase {
		t.Fatalf("signature base:\n%s\nwant (RFC 9421):\n%s", base, wantBase)
	}
	if err := Verify(r, s, pub); err != nil {
		t.Fatalf("the RFC's signature: %v", err)
	}
	// And only that base: one byte of a covered component changed, and
	// the same value no longer verifies.
	if len(s.Covered.Items) > 0 {
		s.Value[len(s.Value)/2] ^= 1
		if err := Verify(r, s, pub); err != ErrBadSignature {
			t.Fatalf("the RFC's signature with one bit flipped: %v, want %v", err, ErrBadSignature)
		}
	}
}

// TestRFC9421B21: Appendix B.2.1, minimal signature using rsa-pss-sha512
// (no component covered).
func TestRFC9421B21(t *testing.T) {
	rfcVector(t, rfcRequest(t), "sig-b21",
		`sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"`,
		`sig-b21=:d2pmTvmbncD3xQm8E9ZV2828BjQWGgiwAaw5bAkgibUopemLJcWDy/lkbbHAve4cRAtx31Iq786U7it++wgGxbtRxf8Udx7zFZsckzXaJMkA7ChG52eSkFxykJeNqsrWH5S+oxNFlD4dzVuwe8DhTSja8xxbR/Z2cOGdCbzR72rgFWhzx2VjBqJzsPLMIQKhO4DGezXehhWwE56YCE+O6c0mKZsfxVrogUvA4HELjVKWmAvtl6UnCh8jYzuVG5WSb/QEVPnP5TmcAnLH1g+s++v6d4s8m0gCw1fV5/SITLq9mhho8K3+7EPYTU8IU1bLhdxO5Nyt8C8ssinQ98Xw9Q==:`,
		`"@signature-params": ();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"`,
		rfcPublicKey(t, rfcRSAPSSPublic))
}

// TestRFC9421B23: Appendix B.2.3, full coverage using rsa-pss-sha512.
func TestRFC9421B23(t *testing.T) {
	rfcVector(t, rfcRequest(t), "sig-b23",
		`sig-b23=("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"`,
		`sig-b23=:bbN8oArOxYoyylQQUU6QYwrTuaxLwjAC9fbY2F6SVWvh0yBiMIRGOnMYwZ/5MR6fb0Kh1rIRASVxFkeGt683+qRpRRU5p2voTp768ZrCUb38K0fUxN0O0iC59DzYx8DFll5GmydPxSmme9v6ULbMFkl+V5B1TP/yPViV7KsLNmvKiLJH1pFkh/aYA2HXXZzNBXmIkoQoLd7YfW91kE9o/CCoC1xMy7JA1ipwvKvfrs65ldmlu9bpG6A9BmzhuzF8Eim5f8ui9eH8LZH896+QIF61ka39VBrohr9iyMUJpvRX2Zbhl5ZJzSRxpJyoEZAFL2FUo5fTIztsDZKEgM4cUA==:`,
		`"date": Tue, 20 Apr 2021 02:07:55 GMT
"@method": POST
"@path": /foo
"@query": ?param=Value&Pet=dog
"@authority": example.com
"content-type": application/json
"content-digest": sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:
"content-length": 18
"@signature-params": ("date" "@method" "@path" "@query" "@authority" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-rsa-pss"`,
		rfcPublicKey(t, rfcRSAPSSPublic))
}

// rfcClientCert is the Client-Cert field of Appendix B.3.
const rfcClientCert = ":MIIBqDCCAU6gAwIBAgIBBzAKBggqhkjOPQQDAjA6MRswGQYDVQQKDBJMZXQncyBBdXRoZW50aWNhdGUxGzAZBgNVBAMMEkxBIEludGVybWVkaWF0ZSBDQTAeFw0yMDAxMTQyMjU1MzNaFw0yMTAxMjMyMjU1MzNaMA0xCzAJBgNVBAMMAkJDMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8YnXXfaUgmnMtOXU/IncWalRhebrXmckC8vdgJ1p5Be5F/3YC8OthxM4+k1M6aEAEFcGzkJiNy6J84y7uzo9M6NyMHAwCQYDVR0TBAIwADAfBgNVHSMEGDAWgBRm3WjLa38lbEYCuiCPct0ZaSED2DAOBgNVHQ8BAf8EBAMCBsAwEwYDVR0lBAwwCgYIKwYBBQUHAwIwHQYDVR0RAQH/BBMwEYEPYmRjQGV4YW1wbGUuY29tMAoGCCqGSM49BAMCA0gAMEUCIBHda/r1vaL6G3VliL4/Di6YK0Q6bMjeSkC3dFCOOB8TAiEAx/kHSB4urmiZ0NX5r5XarmPk0wmuydBVoU4hBVZ1yhk=:"

// TestRFC9421B3: Appendix B.3, a TLS-terminating proxy's ecdsa-p256-sha256
// signature over the request it forwards, the client's certificate in
// Client-Cert.
func TestRFC9421B3(t *testing.T) {
	r, err := http.NewRequest("POST", "https://service.internal.example/foo?param=Value&Pet=dog", strings.NewReader(`{"hello": "world"}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Content-Length", "18")
	r.Header.Set("Client-Cert", rfcClientCert)
	rfcVector(t, r, "ttrp",
		`ttrp=("@path" "@query" "@method" "@authority" "client-cert");created=1618884473;keyid="test-key-ecc-p256"`,
		`ttrp=:xVMHVpawaAC/0SbHrKRs9i8I3eOs5RtTMGCWXm/9nvZzoHsIg6Mce9315T6xoklyy0yzhD9ah4JHRwMLOgmizw==:`,
		`"@path": /foo
"@query": ?param=Value&Pet=dog
"@method": POST
"@authority": service.internal.example
"client-cert": `+rfcClientCert+`
"@signature-params": ("@path" "@query" "@method" "@authority" "client-cert");created=1618884473;keyid="test-key-ecc-p256"`,
		rfcPublicKey(t, rfcP256Public))
}

// rfcTransformRequest is the request of Appendix B.4, as sent.
func rfcTransformRequest(t *testing.T) *http.Request {
	t.Helper()
	r, err := http.NewRequest("GET", "https://example.org/demo?name1=Value1&Name2=value2", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Date", "Fri, 15 Jul 2022 14:24:55 GMT")
	r.Header.Add("Accept", "application/json")
	r.Header.Add("Accept", "*/*")
	return r
}

const (
	rfcTransformInput = `transform=("@method" "@path" "@authority" "accept");created=1618884473;keyid="test-key-ed25519"`
	rfcTransformSig   = `transform=:ZT1kooQsEHpZ0I1IjCqtQppOmIqlJPeo7DHR3SoMn0s5JZ1eRGS0A+vyYP9t/LXlh5QMFFQ6cpLt2m0pmj3NDA==:`
)

// TestRFC9421B4: Appendix B.4, message transformations: the ed25519
// signature (deterministic: signing the base again gives the RFC's value)
// survives what leaves the covered components alone (a query parameter
// added, a field added, the two Accept lines combined into one) and no
// change to one of them (the Accept values reordered, another method,
// path or authority).
func TestRFC9421B4(t *testing.T) {
	rfcVector(t, rfcTransformRequest(t), "transform", rfcTransformInput, rfcTransformSig,
		`"@method": GET
"@path": /demo
"@authority": example.org
"accept": application/json, */*
"@signature-params": ("@method" "@path" "@authority" "accept");created=1618884473;keyid="test-key-ed25519"`,
		ed25519.PublicKey(rfcPub))

	r := rfcTransformRequest(t)
	if err := Sign(r, "transform", NewCovered([]string{"@method", "@path", "@authority", "accept"},
		Params{Created: time.Unix(1618884473, 0), KeyID: "test-key-ed25519"}), ed25519.NewKeyFromSeed(rfcSeed)); err != nil {
		t.Fatal(err)
	}
	if got := r.Header.Get("Signature"); got != rfcTransformSig {
		t.Errorf("signed again: %s\nwant (RFC 9421): %s", got, rfcTransformSig)
	}

	for _, tc := range []struct {
		name   string
		change func(r *http.Request)
		valid  bool
	}{
		{"QueryParameterAdded", func(r *http.Request) { r.URL.RawQuery += "&param=added" }, true},
		{"FieldAdded", func(r *http.Request) { r.Header.Set("Accept-Language", "en-US,en;q=0.5") }, true},
		{"AcceptCombined", func(r *http.Request) { r.Header["Accept"] = []string{"application/json, */*"} }, true},
		{"DateChanged", func(r *http.Request) { r.Header.Set("Date", "Sat, 16 Jul 2022 14:24:55 GMT") }, true},
		{"AcceptReordered", func(r *http.Request) { r.Header["Accept"] = []string{"*/*", "application/json"} }, false},
		{"MethodChanged", func(r *http.Request) { r.Method = "POST" }, false},
		{"PathChanged", func(r *http.Request) { r.URL.Path = "/other" }, false},
		{"AuthorityChanged", func(r *http.Request) { r.Host = "example.com" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rfcTransformRequest(t)
			r.Header.Set("Signature-Input", rfcTransformInput)
			r.Header.Set("Signature", rfcTransformSig)
			tc.change(r)
			sigs, err := Parse(r.Header)
			if err != nil {
				t.Fatal(err)
			}
			err = Verify(r, sigs["transform"], ed25519.PublicKey(rfcPub))
			if tc.valid && err != nil || !tc.valid && err != ErrBadSignature {
				t.Errorf("verify: %v, want valid=%v", err, tc.valid)
			}
		})
	}
}

// rfcResponseVector is rfcVector for a response's signature: components
// with req from r, the others from resp.
func rfcResponseVector(t *testing.T, r *http.Request, resp *Response, label, input, sig, wantBase string, pub crypto.PublicKey) {
	t.Helper()
	resp.Header.Set("Signature-Input", input)
	resp.Header.Set("Signature", sig)
	sigs, err := Parse(resp.Header)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	s := sigs[label]
	if s == nil {
		t.Fatalf("no signature %s parsed", label)
	}
	base, err := ResponseBase(r, resp, s.Covered)
	if err != nil {
		t.Fatalf("ResponseBase: %v", err)
	}
	if base != wantBase {
		t.Fatalf("signature base:\n%s\nwant (RFC 9421):\n%s", base, wantBase)
	}
	if err := VerifyResponse(r, resp, s, pub); err != nil {
		t.Fatalf("the RFC's signature: %v", err)
	}
	s.Value[len(s.Value)/2] ^= 1
	if err := VerifyResponse(r, resp, s, pub); err != ErrBadSignature {
		t.Fatalf("the RFC's signature with one bit flipped: %v, want %v", err, ErrBadSignature)
	}
}

// TestRFC9421B24: Appendix B.2.4, a response signed with ecdsa-p256-sha256.
func TestRFC9421B24(t *testing.T) {
	resp := &Response{Status: 200, Header: http.Header{}}
	resp.Header.Set("Date", "Tue, 20 Apr 2021 02:07:56 GMT")
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Set("Content-Digest", "sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:")
	resp.Header.Set("Content-Length", "23")
	rfcResponseVector(t, rfcRequest(t), resp, "sig-b24",
		`sig-b24=("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256"`,
		`sig-b24=:wNmSUAhwb5LxtOtOpNa6W5xj067m5hFrj0XQ4fvpaCLx0NKocgPquLgyahnzDnDAUy5eCdlYUEkLIj+32oiasw==:`,
		`"@status": 200
"content-type": application/json
"content-digest": sha-512=:mEWXIS7MaLRuGgxOBdODa3xqM1XdEvxoYhvlCFJ41QJgJc4GTsPp29l5oGX69wWdXymyU0rjJuahq4l5aGgfLQ==:
"content-length": 23
"@signature-params": ("@status" "content-type" "content-digest" "content-length");created=1618884473;keyid="test-key-ecc-p256"`,
		rfcPublicKey(t, rfcP256Public))
}

// TestRFC9421Section24: the request-response binding of Section 2.4: the
// response's ecdsa-p256-sha256 signature covers its status and fields and,
// with req, the request's sig1 member of Signature, its authority and its
// method. (The request's own sig1 value there is not checked: it does not
// verify with test-key-rsa-pss over the request's base, which is the one
// B.2 gives this request.)
func TestRFC9421Section24(t *testing.T) {
	r, err := http.NewRequest("POST", "https://example.com/foo?param=Value&Pet=dog", strings.NewReader(`{"hello": "world"}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:")
	r.Header.Set("Content-Length", "18")
	const sig1 = ":LAH8BjcfcOcLojiuOBFWn0P5keD3xAOuJRGziCLuD8r5MW9S0RoXXLzLSRfGY/3SF8kVIkHjE13SEFdTo4Af/fJ/Pu9wheqoLVdwXyY/UkBIS1M8Brc8IODsn5DFIrG0IrburbLi0uCc+E2ZIIb6HbUJ+o+jP58JelMTe0QE3IpWINTEzpxjqDf5/Df+InHCAkQCTuKsamjWXUpyOT1Wkxi7YPVNOjW4MfNuTZ9HdbD2Tr65+BXeTG9ZS/9SWuXAc+BZ8WyPz0QRz//ec3uWXd7bYYODSjRAxHqX+S1ag3LZElYyUKaAIjZ8MGOt4gXEwCSLDv/zqxZeWLj/PDkn6w==:"
	r.Header.Set("Signature-Input", `sig1=("@method" "@authority" "@path" "content-digest" "content-length" "content-type");created=1618884475;keyid="test-key-rsa-pss"`)
	r.Header.Set("Signature", "sig1="+sig1)

	resp := &Response{Status: 503, Header: http.Header{}}
	resp.Header.Set("Date", "Tue, 20 Apr 2021 02:07:56 GMT")
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Set("Content-Length", "62")
	rfcResponseVector(t, r, resp, "reqres",
		`reqres=("@status" "content-length" "content-type" "signature";req;key="sig1" "@authority";req "@method";req);created=1618884479;keyid="test-key-ecc-p256"`,
		`reqres=:mh17P4TbYYBmBwsXPT4nsyVzW4Rp9Fb8WcvnfqKCQLoMvzOBLD/n32tL/GPW6XE5GAS5bdsg1khK6lBzV1Cx/Q==:`,
		`"@status": 503
"content-length": 62
"content-type": application/json
"signature";req;key="sig1": `+sig1+`
"@authority";req: example.com
"@method";req: POST
"@signature-params": ("@status" "content-length" "content-type" "signature";req;key="sig1" "@authority";req "@method";req);created=1618884479;keyid="test-key-ecc-p256"`,
		rfcPublicKey(t, rfcP256Public))
}

// TestRFC9421Unsupported: the example whose component the package does
// not compute is refused, with an error that names the component, never
// given a wrong base.
func TestRFC9421Unsupported(t *testing.T) {
	for _, tc := range []struct{ name, input, want string }{
		// B.2.2: a named query parameter.
		{"B22", `sig-b22=("@authority" "content-digest" "@query-param";name="Pet");created=1618884473;keyid="test-key-rsa-pss";tag="header-example"`, `"@query-param";name="Pet"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rfcRequest(t)
			r.Header.Set("Signature-Input", tc.input)
			r.Header.Set("Signature", strings.SplitN(tc.input, "=", 2)[0]+"=:AAAA:")
			sigs, err := Parse(r.Header)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range sigs {
				_, err = Base(r, s.Covered)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Base: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
