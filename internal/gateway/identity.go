package gateway

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dunglas/httpsfv"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/safetext"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// The fields the gateway sets on every request to the origin. Client-Cert
// and Client-Cert-Chain are RFC 9440's; the others say what RFC 9440
// leaves out, each a Structured Field (RFC 8941) an origin can parse.
const (
	HeaderClientCert      = "Client-Cert"       // RFC 9440: sf-binary of the leaf's DER, for a validated certificate only
	HeaderClientCertChain = "Client-Cert-Chain" // RFC 9440: sf-list of sf-binary, the verified path's intermediates
	HeaderFlags           = "Req-Mtls-Flags"    // sf-list of integers: the TLS flags the client sent; absent when none
	HeaderCertRequested   = "Req-Mtls-Cert-Requested"
	HeaderCertStatus      = "Req-Mtls-Cert-Status" // sf-token none, valid or invalid;reason="..."
	HeaderCertSHA256      = "Req-Mtls-Cert-Sha256" // sf-binary: SHA-256 of the leaf's DER, for any certificate received
	HeaderCertStore       = "Req-Mtls-Cert-Store"  // sf-token client, bot or agent: the store it was checked against
	HeaderCertAgent       = "Req-Mtls-Cert-Agent"  // sf-string: the URL of the trusted agent whose directory vouched for the certificate (store agent)
	HeaderResumed         = "Req-Mtls-Resumed"
	HeaderXFCC            = "X-Forwarded-Client-Cert" // Envoy's format, when asked for
)

// spoofable lists, normalised (lower case, '_' for '-'), every field name
// the gateway sets or that origins read as the client's identity or
// address. Any incoming copy, in any spelling, is removed: Go
// canonicalises names on dashes only, while CGI, WSGI and PHP origins map
// Client_Cert and Client-Cert to the same variable.
var spoofable = map[string]bool{
	"client-cert": true, "client-cert-chain": true, "x-forwarded-client-cert": true, "x-forwarded-client-cert-info": true,
	"forwarded": true, "x-forwarded-for": true, "x-forwarded-proto": true, "x-forwarded-host": true,
	"x-real-ip": true, "x-client-ip": true, "true-client-ip": true, "cf-connecting-ip": true, "bot-identity-match": true,
	"bot-identity": true,
}

// spoofablePrefixes are families of such fields: ours, nginx- and
// Apache-style (X-SSL-Client-Verify, SSL_CLIENT_S_DN), Traefik's
// X-Forwarded-Tls-Client-Cert and -Info, and X-Client-Cert*.
var spoofablePrefixes = []string{"req-mtls-", "web-bot-auth-", "ssl-client-", "x-ssl-client-", "x-client-cert", "x-forwarded-tls-client-cert"}

// normalise maps a field name to the form CGI-style origins compare.
func normalise(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// StripSpoofable removes from h every field that spoofable names or that
// starts with one of spoofablePrefixes, whatever its case and whether it
// uses dashes or underscores.
func StripSpoofable(h http.Header) {
	for name := range h {
		if isSpoofable(name) {
			delete(h, name)
		}
	}
}

// isSpoofable reports whether a field name is one StripSpoofable removes.
// It runs on every field of every request: the name is normalised in a
// buffer on the stack, not in a new string.
func isSpoofable(name string) bool {
	var buf [64]byte
	if len(name) > len(buf) || !isASCII(name) {
		// (Field names are ASCII tokens; anything else, which servers
		// refuse before here, goes the long way, where ToLower maps
		// letters such as U+0130 to ASCII ones.)
		return spoofableNormal([]byte(normalise(name)))
	}
	b := buf[:len(name)]
	for i := range len(name) {
		c := name[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		b[i] = c
	}
	return spoofableNormal(b)
}

// spoofableNormal reports whether a normalised name (normalise) is one of
// spoofable or starts with one of spoofablePrefixes.
func spoofableNormal(n []byte) bool {
	if spoofable[string(n)] {
		return true
	}
	for _, p := range spoofablePrefixes {
		if len(n) >= len(p) && string(n[:len(p)]) == p {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// CertSHA256 is the SHA-256 of a certificate's DER as the gateway sends it
// in Req-Mtls-Cert-Sha256 and the access log writes it: an RFC 8941 Byte
// Sequence, ":" and standard base64 and ":".
func CertSHA256(der []byte) string {
	sum := sha256.Sum256(der)
	return sfBinary(sum[:])
}

// sfBinary serialises b as an RFC 8941 Byte Sequence.
func sfBinary(b []byte) string { return ":" + base64.StdEncoding.EncodeToString(b) + ":" }

// sfBool serialises an RFC 8941 Boolean.
func sfBool(b bool) string {
	if b {
		return "?1"
	}
	return "?0"
}

// sfString serialises s as an RFC 8941 String, which holds printable ASCII
// alone: a string with anything else is first written in Go's ASCII
// escaping (a newline as \n, ü as \u00fc), then quotes and backslashes
// are escaped as RFC 8941, Section 3.3.3 says.
func sfString(s string) string {
	for _, r := range s {
		if r < 0x20 || r >= 0x7f {
			q := strconv.QuoteToASCII(s)
			s = q[1 : len(q)-1]
			break
		}
	}
	return `"` + quoteEscaper.Replace(s) + `"`
}

// Identity is what the gateway tells the origin about one request's
// connection: the TLS flags and the handshake's decision.
type Identity struct {
	Flags    []int
	Decision *auth.Decision // nil when the handshake recorded none
}

// Set writes the identity fields on h (which StripSpoofable has cleaned).
func (id Identity) Set(h http.Header, xfcc bool, by string) {
	flags := make([]string, len(id.Flags))
	for i, f := range id.Flags {
		flags[i] = strconv.Itoa(f)
	}
	if len(flags) > 0 {
		// RFC 8941, Section 3.1: an empty list is not serialised; the
		// field is left out when no flags came.
		h.Set(HeaderFlags, strings.Join(flags, ", "))
	}
	d := id.Decision
	if d == nil {
		h.Set(HeaderCertRequested, sfBool(false))
		h.Set(HeaderCertStatus, "none")
		h.Set(HeaderResumed, sfBool(false))
		return
	}
	h.Set(HeaderCertRequested, sfBool(d.Requested))
	h.Set(HeaderResumed, sfBool(d.Resumed))
	if len(d.Chain) == 0 {
		h.Set(HeaderCertStatus, "none")
		return
	}
	leaf := d.Chain[0]
	sum := sha256.Sum256(leaf.Raw)
	h.Set(HeaderCertSHA256, sfBinary(sum[:]))
	// (CertSHA256 writes the same for the access log.)
	h.Set(HeaderCertStore, d.Store.String())
	if d.Err != nil {
		h.Set(HeaderCertStatus, "invalid;reason="+sfString(d.Err.Error()))
		return
	}
	h.Set(HeaderCertStatus, "valid")
	if d.Agent != "" {
		h.Set(HeaderCertAgent, sfString(d.Agent))
	}
	// RFC 9440, Section 2: only for a certificate that validated; the
	// field itself says nothing of validation.
	h.Set(HeaderClientCert, sfBinary(leaf.Raw))
	// RFC 9440, Section 2.2: the chain used to validate the leaf, the
	// verified path's intermediates (not whatever else the client sent;
	// the root is the origin's to know).
	if inter := intermediates(d.Verified); len(inter) > 0 {
		parts := make([]string, len(inter))
		for i, c := range inter {
			parts[i] = sfBinary(c.Raw)
		}
		h.Set(HeaderClientCertChain, strings.Join(parts, ", "))
	}
	if xfcc {
		h.Set(HeaderXFCC, xfccElement(d, by, hex.EncodeToString(sum[:])))
	}
}

// xfccElement is one element of Envoy's x-forwarded-client-cert: Key=Value
// pairs separated by ';', values with ',' ';' '=' or '"' quoted.
func xfccElement(d *auth.Decision, by, hash string) string {
	leaf := d.Chain[0]
	// Percent-encoded PEM, a space as %20, quoted, as Envoy writes it.
	encode := func(pemText string) string {
		return `"` + strings.ReplaceAll(url.QueryEscape(pemText), "+", "%20") + `"`
	}
	var chain strings.Builder
	for _, c := range append([]*x509.Certificate{leaf}, intermediates(d.Verified)...) {
		chain.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	kv := []string{}
	if by != "" {
		kv = append(kv, "By="+xfccValue(by))
	}
	kv = append(kv, "Hash="+hash, "Cert="+encode(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))),
		"Chain="+encode(chain.String()),
		"Subject="+strconv.Quote(safetext.Escape(leaf.Subject.String())))
	for _, u := range leaf.URIs {
		kv = append(kv, "URI="+xfccValue(u.String()))
	}
	for _, n := range leaf.DNSNames {
		kv = append(kv, "DNS="+xfccValue(safetext.Escape(n)))
	}
	return strings.Join(kv, ";")
}

// intermediates are the certificates of a verified path (leaf first, root
// last) between the leaf and the root.
func intermediates(path []*x509.Certificate) []*x509.Certificate {
	if len(path) <= 2 {
		return nil
	}
	return path[1 : len(path)-1]
}

func xfccValue(v string) string {
	if strings.ContainsAny(v, ",;=\"") {
		return strconv.Quote(v)
	}
	return v
}

// The Web Bot Auth fields the gateway sets, when it verifies signatures
// (-signature-agents).
const (
	HeaderWBAStatus = "Web-Bot-Auth-Status" // sf-token none, valid or invalid;reason="..."
	HeaderWBAAgent  = "Web-Bot-Auth-Agent"  // sf-string: the agent's URL as the agents file lists it, when valid
	HeaderWBAKeyID  = "Web-Bot-Auth-Keyid"  // sf-string: the key's JWK SHA-256 thumbprint, when valid
	// HeaderSameBot is set when a certificate validated and a signature
	// verified: ?1 when they name the same agent (the agent that vouched
	// for the certificate is the signature's, or, for a CA-issued one,
	// one of its DNS names is the agent URL's host), ?0 otherwise.
	HeaderSameBot = "Bot-Identity-Match"
)

// SetWebBotAuth sets the Web Bot Auth fields for res, and whether the
// certificate of d (if one validated) names the same agent.
func SetWebBotAuth(h http.Header, res webbotauth.Result, d *auth.Decision) {
	switch res.Status {
	case "valid":
		h.Set(HeaderWBAStatus, "valid")
		h.Set(HeaderWBAAgent, sfString(res.Agent))
		h.Set(HeaderWBAKeyID, sfString(res.KeyID))
		if d != nil && d.Validated() {
			h.Set(HeaderSameBot, sfBool(SameAgent(d, res.Agent)))
		}
	case "invalid":
		h.Set(HeaderWBAStatus, "invalid;reason="+sfString(res.Reason))
	default:
		h.Set(HeaderWBAStatus, "none")
	}
}

// SameAgent reports whether the validated certificate of d and a Web Bot
// Auth agent name the same bot: the agent that vouched for the
// certificate is agent itself, or (a certificate of a CA store) SameBot.
func SameAgent(d *auth.Decision, agent string) bool {
	if d.Agent != "" {
		return d.Agent == agent
	}
	return SameBot(d.Chain[0], agent)
}

// HeaderBotIdentity is the identity the origin can act on without an X.509
// parser: an RFC 9651 Dictionary with agent (sf-string: the agent's URL,
// when a layer verified one), dns (sf-string: the validated certificate's
// first DNS name) and layers (an inner list of the tokens tls and
// signature, the layers that verified). Absent when none did.
const HeaderBotIdentity = "Bot-Identity"

// BotIdentity serialises Bot-Identity for the decision d (nil for none)
// and the signature's verdict res; "" when no layer verified.
func BotIdentity(d *auth.Decision, res webbotauth.Result) string {
	tlsOK := d != nil && d.Validated()
	sigOK := res.Status == "valid"
	if !tlsOK && !sigOK {
		return ""
	}
	dict := httpsfv.NewDictionary()
	switch {
	case sigOK:
		dict.Add("agent", httpsfv.NewItem(sfASCII(res.Agent)))
	case tlsOK && d.Agent != "":
		// The agent whose directory vouched for the certificate.
		dict.Add("agent", httpsfv.NewItem(sfASCII(d.Agent)))
	}
	if tlsOK && len(d.Chain[0].DNSNames) > 0 {
		dict.Add("dns", httpsfv.NewItem(sfASCII(d.Chain[0].DNSNames[0])))
	}
	layers := httpsfv.InnerList{Params: httpsfv.NewParams()}
	if tlsOK {
		layers.Items = append(layers.Items, httpsfv.NewItem(httpsfv.Token("tls")))
	}
	if sigOK {
		layers.Items = append(layers.Items, httpsfv.NewItem(httpsfv.Token("signature")))
	}
	dict.Add("layers", layers)
	v, err := httpsfv.Marshal(dict)
	if err != nil {
		// (Not reached: every string is made printable ASCII first.)
		return ""
	}
	return v
}

// sfASCII makes s fit an RFC 9651 String, which holds printable ASCII
// alone: each other character is written in Go's ASCII escaping (a
// newline as \n, ü as \u00fc); quotes and backslashes are left to the
// serialiser.
func sfASCII(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f }) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r >= 0x7f {
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// SameBot reports whether a client certificate and a Web Bot Auth agent
// name the same bot: one of the certificate's DNS names is the host of the
// agent's URL (letters compared without regard to case).
func SameBot(leaf *x509.Certificate, agent string) bool {
	u, err := url.Parse(agent)
	if err != nil {
		return false
	}
	for _, n := range leaf.DNSNames {
		if strings.EqualFold(n, u.Hostname()) {
			return true
		}
	}
	return false
}
