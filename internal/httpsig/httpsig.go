// Package httpsig is HTTP Message Signatures (RFC 9421) for requests: the
// signature base built from a list of covered components, signing, and
// reading and verifying the Signature-Input and Signature fields. It is the
// layer under Web Bot Auth (draft-meunier-webbotauth-httpsig-protocol),
// which says which components and parameters a bot's signature carries.
//
// Structured fields (RFC 9651, formerly 8941) are parsed and written with
// github.com/dunglas/httpsfv, never by splitting strings.
package httpsig

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dunglas/httpsfv"
)

// Params are a signature's parameters (RFC 9421, Section 2.3).
type Params struct {
	Created, Expires time.Time // zero when absent
	Nonce            string
	Alg              string
	KeyID            string
	Tag              string
}

// A Signature is one labelled signature of a request: what it covers, its
// parameters, and its value.
type Signature struct {
	Label string
	// Covered is the inner list of covered components, with the
	// signature's parameters, exactly as Signature-Input carried it (its
	// serialization is the @signature-params line of the base).
	Covered httpsfv.InnerList
	Params  Params
	Value   []byte
}

// Components returns the covered components' names, in order.
func (s *Signature) Components() []string {
	names := make([]string, len(s.Covered.Items))
	for i, it := range s.Covered.Items {
		names[i], _ = it.Value.(string)
	}
	return names
}

// Covers reports whether the signature covers the component named name
// (with no parameters, or with key=key when key is not empty).
func (s *Signature) Covers(name, key string) bool {
	for _, it := range s.Covered.Items {
		if n, _ := it.Value.(string); n != name {
			continue
		}
		k, ok := it.Params.Get("key")
		if key == "" && !ok || key != "" && ok && k == key {
			return true
		}
	}
	return false
}

// Parse reads the signatures of r from its Signature-Input and Signature
// fields, by label. A label in one field and not the other, or a field
// that is not the structured dictionary RFC 9421 says, is an error.
func Parse(h http.Header) (map[string]*Signature, error) {
	inputs, sigs := h.Values("Signature-Input"), h.Values("Signature")
	if len(inputs) == 0 && len(sigs) == 0 {
		return nil, nil
	}
	in, err := httpsfv.UnmarshalDictionary(inputs)
	if err != nil {
		return nil, fmt.Errorf("Signature-Input: %w", err)
	}
	sv, err := httpsfv.UnmarshalDictionary(sigs)
	if err != nil {
		// RFC 8941, Section 4.2.7: parsers SHOULD NOT fail when a
		// byte sequence lacks base64's "=" padding (httpsfv does);
		// the padding is added and the field parsed again.
		var err2 error
		if sv, err2 = httpsfv.UnmarshalDictionary(padByteSequences(sigs)); err2 != nil {
			return nil, fmt.Errorf("Signature: %w", err)
		}
	}
	out := map[string]*Signature{}
	for _, label := range in.Names() {
		m, _ := in.Get(label)
		list, ok := m.(httpsfv.InnerList)
		if !ok {
			return nil, fmt.Errorf("Signature-Input %q: not an inner list", label)
		}
		for _, it := range list.Items {
			if _, ok := it.Value.(string); !ok {
				return nil, fmt.Errorf("Signature-Input %q: a component identifier is not a string", label)
			}
		}
		v, ok := sv.Get(label)
		if !ok {
			return nil, fmt.Errorf("Signature-Input %q: no Signature of that label", label)
		}
		item, ok := v.(httpsfv.Item)
		value, isBytes := item.Value.([]byte)
		if !ok || !isBytes {
			return nil, fmt.Errorf("Signature %q: not a byte sequence", label)
		}
		p, err := readParams(list.Params)
		if err != nil {
			return nil, fmt.Errorf("Signature-Input %q: %w", label, err)
		}
		out[label] = &Signature{Label: label, Covered: list, Params: p, Value: value}
	}
	for _, label := range sv.Names() {
		if out[label] == nil {
			return nil, fmt.Errorf("Signature %q: no Signature-Input of that label", label)
		}
	}
	return out, nil
}

// padByteSequences returns values with "=" padding added to each byte
// sequence (":" base64 ":", RFC 8941, Section 3.3.5) whose length is not
// a multiple of 4. Colons inside strings (Section 3.3.3, where a
// backslash escapes the next character) are left alone; anything else is
// copied as it is, for the structured-field parser to judge.
func padByteSequences(values []string) []string {
	out := make([]string, len(values))
	for i, v := range values {
		var b strings.Builder
		inString := false
		for j := 0; j < len(v); j++ {
			c := v[j]
			switch {
			case inString && c == '\\' && j+1 < len(v):
				b.WriteByte(c)
				j++
				c = v[j]
			case c == '"':
				inString = !inString
			case !inString && c == ':':
				end := strings.IndexByte(v[j+1:], ':')
				if end < 0 {
					break
				}
				data := v[j+1 : j+1+end]
				b.WriteString(":" + data + strings.Repeat("=", (4-len(data)%4)%4) + ":")
				j += end + 1
				continue
			}
			b.WriteByte(c)
		}
		out[i] = b.String()
	}
	return out
}

// readParams reads the parameters RFC 9421, Section 2.3 defines, with the
// types it gives them.
func readParams(p *httpsfv.Params) (Params, error) {
	var out Params
	for _, name := range p.Names() {
		v, _ := p.Get(name)
		var ok bool
		switch name {
		case "created", "expires":
			var n int64
			if n, ok = v.(int64); ok {
				t := time.Unix(n, 0)
				if name == "created" {
					out.Created = t
				} else {
					out.Expires = t
				}
			}
		case "nonce":
			out.Nonce, ok = v.(string)
		case "alg":
			out.Alg, ok = v.(string)
		case "keyid":
			out.KeyID, ok = v.(string)
		case "tag":
			out.Tag, ok = v.(string)
		default:
			ok = true // other parameters are covered, and otherwise ignored
		}
		if !ok {
			return out, fmt.Errorf("parameter %s has the wrong type", name)
		}
	}
	return out, nil
}

// A Response is the response a signature covers (RFC 9421, Section 2.4):
// its status and its header. The request it answers is the signature's
// other half: components covered with req come from the request.
type Response struct {
	Status int // 0 when not known (then @status cannot be covered)
	Header http.Header
}

// message is what a signature covers: a request alone, or a response
// (resp not nil) and the request it answers.
type message struct {
	req  *http.Request
	resp *Response
}

// Base returns the signature base of r for the covered components and
// parameters of covered (RFC 9421, Section 2.5): a line per component,
// then the @signature-params line.
func Base(r *http.Request, covered httpsfv.InnerList) (string, error) {
	return signatureBase(message{req: r}, covered)
}

// ResponseBase returns the signature base of resp, the answer to r, for
// covered: components with req from r, the others from resp (RFC 9421,
// Section 2.4).
func ResponseBase(r *http.Request, resp *Response, covered httpsfv.InnerList) (string, error) {
	return signatureBase(message{req: r, resp: resp}, covered)
}

func signatureBase(m message, covered httpsfv.InnerList) (string, error) {
	var b strings.Builder
	seen := map[string]bool{}
	for _, it := range covered.Items {
		id, err := httpsfv.Marshal(it)
		if err != nil {
			return "", err
		}
		if seen[id] {
			return "", fmt.Errorf("component %s covered twice", id)
		}
		seen[id] = true
		v, err := componentValue(m, it)
		if err != nil {
			return "", fmt.Errorf("component %s: %w", id, err)
		}
		b.WriteString(id + ": " + v + "\n")
	}
	params, err := httpsfv.Marshal(httpsfv.List{covered})
	if err != nil {
		return "", err
	}
	b.WriteString(`"@signature-params": ` + params)
	return b.String(), nil
}

// componentValue is a covered component's value: a derived component
// (Section 2.2) or an HTTP field (Section 2.1), of the message's request
// or response. Section 2.4: in a response's signature, a component with
// req is the request's, one without the response's; a request's
// signature has only the request to cover (req on it is tolerated on
// derived components, where it can name nothing else).
func componentValue(m message, it httpsfv.Item) (string, error) {
	name := it.Value.(string)
	req := false
	if v, ok := it.Params.Get("req"); ok {
		if v != true {
			return "", errors.New("req is a boolean")
		}
		req = true
	}
	fromResponse := m.resp != nil && !req
	if strings.HasPrefix(name, "@") {
		for _, p := range it.Params.Names() {
			if p != "req" {
				return "", errors.New("parameters on a derived component other than req are not supported")
			}
		}
		if name == "@status" {
			// Section 2.2.9: the response's status, three digits.
			if !fromResponse || m.resp.Status < 100 || m.resp.Status > 999 {
				return "", errors.New("@status is the status of a response")
			}
			return strconv.Itoa(m.resp.Status), nil
		}
		if fromResponse {
			return "", fmt.Errorf("derived component %s is the request's: a response covers it with req", name)
		}
		return derived(m.req, name)
	}
	if m.req == nil && !fromResponse {
		return "", errors.New("no request")
	}
	if name != strings.ToLower(name) {
		return "", errors.New("field names are covered in lower case")
	}
	var values []string
	where := "request"
	if fromResponse {
		values, where = m.resp.Header.Values(name), "response"
	} else {
		values = m.req.Header.Values(name)
		if name == "host" && len(values) == 0 && m.req.Host != "" {
			values = []string{m.req.Host}
		}
	}
	if len(values) == 0 {
		return "", errors.New("not in the " + where)
	}
	// Section 2.1: each value trimmed, combined with ", " (a copy: the
	// header's own values are left as they are).
	values = slices.Clone(values)
	for i, v := range values {
		values[i] = strings.TrimSpace(v)
	}
	v := strings.Join(values, ", ")
	if key, ok := it.Params.Get("key"); ok {
		// Section 2.1.2: a member of a dictionary field, serialized.
		k, _ := key.(string)
		d, err := httpsfv.UnmarshalDictionary(values)
		if err != nil {
			return "", fmt.Errorf("key=%q: the field is not a dictionary: %w", k, err)
		}
		member, ok := d.Get(k)
		if !ok {
			return "", fmt.Errorf("key=%q: no such member", k)
		}
		one := httpsfv.NewDictionary()
		one.Add(k, member)
		s, err := httpsfv.Marshal(one)
		if err != nil {
			return "", err
		}
		// The member's value alone: what follows "k=".
		return strings.TrimPrefix(s, k+"="), nil
	}
	if _, ok := it.Params.Get("sf"); ok {
		return "", errors.New("the sf parameter is not supported")
	}
	return v, nil
}

// derived returns a derived component of r (RFC 9421, Section 2.2).
func derived(r *http.Request, name string) (string, error) {
	switch name {
	case "@method":
		return r.Method, nil // Section 2.2.1: as sent, case kept
	case "@authority":
		return authority(r), nil // Section 2.2.3
	case "@scheme":
		if r.TLS != nil || r.URL.Scheme == "https" {
			return "https", nil
		}
		return "http", nil // Section 2.2.4
	case "@target-uri":
		scheme, _ := derived(r, "@scheme")
		return scheme + "://" + authority(r) + r.URL.RequestURI(), nil // Section 2.2.2
	case "@request-target":
		return r.URL.RequestURI(), nil // Section 2.2.5
	case "@path":
		p := r.URL.EscapedPath()
		if p == "" {
			p = "/"
		}
		return p, nil // Section 2.2.6
	case "@query":
		return "?" + r.URL.RawQuery, nil // Section 2.2.7
	}
	return "", fmt.Errorf("derived component %s is not supported", name)
}

// authority is the request's host, in lower case, with its port only when
// it is not the scheme's default (RFC 9421, Section 2.2.3).
func authority(r *http.Request) string {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	host = strings.ToLower(host)
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		return host
	}
	secure := r.TLS != nil || r.URL.Scheme == "https"
	if secure && port == "443" || !secure && port == "80" {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return host
}

// NewCovered builds the inner list of covered components and parameters
// to sign: components in order (a name, "name;key=K" for a dictionary
// member, "name;req" for the request's component in a response's
// signature), then the parameters set in p, in RFC 9421's order.
func NewCovered(components []string, p Params) httpsfv.InnerList {
	list := httpsfv.InnerList{Params: httpsfv.NewParams()}
	for _, c := range components {
		name, req := strings.CutSuffix(c, ";req")
		name, key, hasKey := strings.Cut(name, ";key=")
		it := httpsfv.NewItem(name)
		if hasKey {
			it.Params.Add("key", key)
		}
		if req {
			it.Params.Add("req", true)
		}
		list.Items = append(list.Items, it)
	}
	if !p.Created.IsZero() {
		list.Params.Add("created", p.Created.Unix())
	}
	if !p.Expires.IsZero() {
		list.Params.Add("expires", p.Expires.Unix())
	}
	for _, kv := range []struct{ k, v string }{{"nonce", p.Nonce}, {"alg", p.Alg}, {"keyid", p.KeyID}, {"tag", p.Tag}} {
		if kv.v != "" {
			list.Params.Add(kv.k, kv.v)
		}
	}
	return list
}

// Sign signs r with key under label, covering covered, and sets its
// Signature-Input and Signature fields (adding to any already there). Keys
// that sign are Ed25519 and ECDSA P-256: a crypto.Signer whose public key is
// an ed25519.PublicKey or a P-256 *ecdsa.PublicKey (a KMS's will do).
func Sign(r *http.Request, label string, covered httpsfv.InnerList, key crypto.Signer) error {
	return sign(r.Header, message{req: r}, label, covered, key)
}

// SignInto signs the response whose header is h, the answer to r, and
// adds the fields to h: components covered with req are r's, the others
// the response's (RFC 9421, Section 2.4; @status cannot be covered, the
// status not being known here).
func SignInto(h http.Header, r *http.Request, label string, covered httpsfv.InnerList, key crypto.Signer) error {
	return sign(h, message{req: r, resp: &Response{Header: h}}, label, covered, key)
}

func sign(h http.Header, m message, label string, covered httpsfv.InnerList, key crypto.Signer) error {
	base, err := signatureBase(m, covered)
	if err != nil {
		return err
	}
	sig, err := signBase(key, base)
	if err != nil {
		return err
	}
	in := httpsfv.NewDictionary()
	in.Add(label, covered)
	sv := httpsfv.NewDictionary()
	sv.Add(label, httpsfv.NewItem(sig))
	inS, err := httpsfv.Marshal(in)
	if err != nil {
		return err
	}
	svS, err := httpsfv.Marshal(sv)
	if err != nil {
		return err
	}
	h.Add("Signature-Input", inS)
	h.Add("Signature", svS)
	return nil
}

// signBase signs a signature base with key: ed25519 (RFC 9421, Section 3.3.6),
// or ecdsa-p256-sha256 (Section 3.3.4: SHA-256, then r and s as two
// 32-byte big-endian integers, not ASN.1).
func signBase(key crypto.Signer, base string) ([]byte, error) {
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		return key.Sign(nil, []byte(base), crypto.Hash(0))
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			break
		}
		sum := sha256.Sum256([]byte(base))
		der, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
		if err != nil {
			return nil, err
		}
		var rs struct{ R, S *big.Int }
		if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) > 0 {
			return nil, fmt.Errorf("httpsig: ECDSA signature is not ASN.1: %v", err)
		}
		out := make([]byte, 64)
		rs.R.FillBytes(out[:32])
		rs.S.FillBytes(out[32:])
		return out, nil
	}
	return nil, fmt.Errorf("httpsig: signing key is %T, want Ed25519 or ECDSA P-256", key.Public())
}

// CheckContentDigest checks the Content-Digest field of h, when there is
// one, against body (RFC 9530, Section 2): each sha-256 and sha-512
// member must be the digest of body, and one of them must be there;
// members of other algorithms are passed over (Section 5 leaves them to
// the recipient).
func CheckContentDigest(h http.Header, body []byte) error {
	values := h.Values("Content-Digest")
	if len(values) == 0 {
		return nil
	}
	d, err := httpsfv.UnmarshalDictionary(values)
	if err != nil {
		return fmt.Errorf("Content-Digest: %w", err)
	}
	checked := 0
	for _, alg := range d.Names() {
		var sum []byte
		switch alg {
		case "sha-256":
			s := sha256.Sum256(body)
			sum = s[:]
		case "sha-512":
			s := sha512.Sum512(body)
			sum = s[:]
		default:
			continue
		}
		m, _ := d.Get(alg)
		it, ok := m.(httpsfv.Item)
		got, isBytes := it.Value.([]byte)
		if !ok || !isBytes {
			return fmt.Errorf("Content-Digest %s: not a byte sequence", alg)
		}
		if !bytes.Equal(got, sum) {
			return fmt.Errorf("Content-Digest %s: not the digest of the body", alg)
		}
		checked++
	}
	if checked == 0 {
		return errors.New("Content-Digest: no sha-256 or sha-512 member")
	}
	return nil
}

// ErrBadSignature is a signature that does not verify.
var ErrBadSignature = errors.New("signature does not verify")

// Verify checks s over r with pub, by the algorithm the key's type says
// (RFC 9421, Section 3.3): ed25519 (Section 3.3.6), ecdsa-p256-sha256
// (3.3.4, r and s as two 32-byte integers), rsa-pss-sha512 (3.3.1, salt
// of 64 bytes) for an RSA key. An alg parameter, when present, must be the
// key's. It checks the signature, never whether its parameters are
// acceptable: that is the caller's policy.
func Verify(r *http.Request, s *Signature, pub crypto.PublicKey) error {
	return verify(message{req: r}, s, pub)
}

// VerifyResponse checks s, a signature of resp (the answer to r), as
// Verify does: components with req are r's, the others resp's (RFC 9421,
// Section 2.4).
func VerifyResponse(r *http.Request, resp *Response, s *Signature, pub crypto.PublicKey) error {
	return verify(message{req: r, resp: resp}, s, pub)
}

func verify(m message, s *Signature, pub crypto.PublicKey) error {
	alg := AlgOf(pub)
	if alg == "" {
		return fmt.Errorf("httpsig: key is %T; Ed25519, ECDSA P-256 and RSA keys are supported", pub)
	}
	if s.Params.Alg != "" && s.Params.Alg != alg {
		return fmt.Errorf("httpsig: alg %q does not match the key (%s)", s.Params.Alg, alg)
	}
	base, err := signatureBase(m, s.Covered)
	if err != nil {
		return err
	}
	ok := false
	switch k := pub.(type) {
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, []byte(base), s.Value)
	case *ecdsa.PublicKey:
		sum := sha256.Sum256([]byte(base))
		if len(s.Value) == 64 {
			ok = ecdsa.Verify(k, sum[:], new(big.Int).SetBytes(s.Value[:32]), new(big.Int).SetBytes(s.Value[32:]))
		}
	case *rsa.PublicKey:
		sum := sha512.Sum512([]byte(base))
		ok = rsa.VerifyPSS(k, crypto.SHA512, sum[:], s.Value, &rsa.PSSOptions{SaltLength: 64, Hash: crypto.SHA512}) == nil
	}
	if !ok {
		return ErrBadSignature
	}
	return nil
}

// AlgOf is the RFC 9421 algorithm of a public key, "" when none applies.
func AlgOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return "ed25519"
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return "ecdsa-p256-sha256"
		}
	case *rsa.PublicKey:
		return "rsa-pss-sha512"
	}
	return ""
}

// Thumbprint is the JWK SHA-256 thumbprint (RFC 7638) of an Ed25519 public
// key, base64url without padding: Web Bot Auth's keyid. The JWK's required
// members, in lexicographic order, with no white space (RFC 8037,
// Section 2: crv, kty, x).
func Thumbprint(pub ed25519.PublicKey) string {
	j := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(j))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// LoadSigningKey reads an Ed25519 private key from file: PEM (PKCS #8, as
// `openssl genpkey -algorithm ed25519` writes it) or a JWK (kty OKP, crv
// Ed25519, with d).
func LoadSigningKey(file string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if EncryptedPEM(data) {
		return nil, fmt.Errorf("signing key %q: the private key is encrypted (a passphrase protects it): decrypt it first, e.g. openssl pkey -in %q -out key.pem", file, file)
	}
	if b, _ := pem.Decode(data); b != nil {
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing key %q: %w", file, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("signing key %q: a %T, want Ed25519", file, k)
		}
		return ek, nil
	}
	var jwk struct{ Kty, Crv, D, X string }
	if err := json.Unmarshal(data, &jwk); err != nil {
		return nil, fmt.Errorf("signing key %q: neither PEM nor a JWK: %v", file, err)
	}
	if jwk.Kty != "OKP" || jwk.Crv != "Ed25519" || jwk.D == "" {
		return nil, fmt.Errorf("signing key %q: want a JWK with kty OKP, crv Ed25519 and d", file)
	}
	seed, err := base64.RawURLEncoding.DecodeString(jwk.D)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing key %q: d is not a 32-byte base64url seed", file)
	}
	k := ed25519.NewKeyFromSeed(seed)
	if jwk.X != "" && jwk.X != base64.RawURLEncoding.EncodeToString(k.Public().(ed25519.PublicKey)) {
		return nil, fmt.Errorf("signing key %q: x is not the public key of d", file)
	}
	return k, nil
}

// EncryptedPEM reports whether the first PEM block in data is an encrypted
// private key: PKCS #8's ENCRYPTED PRIVATE KEY (RFC 5958, Section 3), or
// the legacy Proc-Type header of RFC 1421, Section 4.6.1.1, that OpenSSL
// still writes.
func EncryptedPEM(data []byte) bool {
	b, _ := pem.Decode(data)
	return b != nil && (b.Type == "ENCRYPTED PRIVATE KEY" || strings.HasSuffix(b.Headers["Proc-Type"], ",ENCRYPTED"))
}

// BotParams are Web Bot Auth's parameters for a signature made now by key
// (draft-meunier-webbotauth-httpsig-protocol-00, Section 4): created and
// expires, a 64-byte random nonce, keyid the key's thumbprint, alg
// ed25519, tag web-bot-auth.
func BotParams(pub ed25519.PublicKey, now time.Time, validity time.Duration) (Params, error) {
	nonce := make([]byte, 64)
	if _, err := rand.Read(nonce); err != nil {
		return Params{}, err
	}
	return Params{Created: now, Expires: now.Add(validity), Nonce: base64.StdEncoding.EncodeToString(nonce),
		Alg: "ed25519", KeyID: Thumbprint(pub), Tag: "web-bot-auth"}, nil
}
