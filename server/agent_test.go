package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	reqmtls "github.com/req-mtls/req-mtls"
	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/httpsig"
	"github.com/req-mtls/req-mtls/internal/testpki"
)

// TestAuthenticatorAgentCertificate: in the library, an Authenticator whose
// SignatureAgentsFile lists an agent (its keys pinned here) validates a
// self-signed certificate naming it, with no CA file, as store "agent"
// with Info.Agent; a certificate whose key the agent does not list, and
// one DenyFile names, fail the handshake.
func TestAuthenticatorAgentCertificate(t *testing.T) {
	p := testpki.New(t)
	dir := t.TempDir()
	const agent = "https://bot.example"
	type pair struct{ crt, key string }
	write := func(name string) (pair, *x509.Certificate, string) {
		cert, key, err := certs.IssueAgent(agent, nil, testpki.Now)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		pr := pair{filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")}
		os.WriteFile(pr.crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600)
		os.WriteFile(pr.key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
		jwk, err := httpsig.PublicJWK(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return pr, cert, jwk
	}
	listed, _, jwk := write("listed")
	unlisted, _, _ := write("unlisted")
	denied, deniedCert, deniedJWK := write("denied")
	jwks := filepath.Join(dir, "bot.jwks")
	os.WriteFile(jwks, []byte(`{"keys":[`+jwk+`,`+deniedJWK+`]}`), 0o600)
	agents := filepath.Join(dir, "agents")
	os.WriteFile(agents, []byte(agent+" "+jwks+"\n"), 0o600)
	denyFile := filepath.Join(dir, "deny")
	os.WriteFile(denyFile, []byte("cert-sha256:"+certs.CertSHA256(deniedCert)+"\n"), 0o600)

	a, err := NewAuthenticator(Config{Policy: PolicyRequire, SignatureAgentsFile: agents, DenyFile: denyFile, Now: testpki.Clock})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := RequestInfo(r)
			fmt.Fprintf(w, "validated=%t store=%s agent=%s", info.Validated(), info.Store, info.Agent)
		}),
		TLSConfig:   a.TLSConfig(&tls.Config{Time: testpki.Clock, Certificates: []tls.Certificate{cert}}),
		ErrorLog:    log.New(io.Discard, "", 0),
		ConnContext: ConnContext,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(a.Listener(ln), "", "")
	t.Cleanup(func() { srv.Close() })
	u := "https://" + ln.Addr().String() + "/"
	do := func(pr pair) (string, error) {
		tr, err := reqmtls.NewTransport(reqmtls.ClientConfig{Time: testpki.Clock, Flags: reqmtls.RequestMTLSFlags, CertFile: pr.crt, KeyFile: pr.key, RootCAs: roots(p), Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.CloseIdleConnections()
		return get(t, &http.Client{Transport: tr}, u)
	}
	if body, err := do(listed); err != nil || body != "validated=true store=agent agent="+agent {
		t.Errorf("the listed key: %q, %v", body, err)
	}
	if _, err := do(unlisted); err == nil || !strings.Contains(err.Error(), "bad_certificate") {
		t.Errorf("a key the agent does not list: %v, want bad_certificate", err)
	}
	if _, err := do(denied); err == nil || !strings.Contains(err.Error(), "certificate_revoked") {
		t.Errorf("a denied certificate: %v, want certificate_revoked", err)
	}
}
