package certs

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"
)

func TestIssueAgentSelfSigned(t *testing.T) {
	now := time.Now()
	cert, key, err := IssueAgent("https://bot.example/agent", nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "https://bot.example/agent" {
		t.Errorf("URIs = %v, want [https://bot.example/agent]", cert.URIs)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
		t.Errorf("other names: %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.IsCA {
		t.Errorf("ExtKeyUsage = %v, IsCA = %v", cert.ExtKeyUsage, cert.IsCA)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
		t.Error("key does not match the certificate")
	}
	if now.Before(cert.NotBefore) || !now.Add(364*24*time.Hour).Before(cert.NotAfter) || now.Add(366*24*time.Hour).Before(cert.NotAfter) {
		t.Errorf("validity %s to %s, want about a year from now", cert.NotBefore, cert.NotAfter)
	}
}

func TestIssueAgentUnderCA(t *testing.T) {
	now := time.Now()
	ca, err := NewCA(pkix.Name{CommonName: "agents root"}, nil, nil, now.Add(-time.Hour), now.Add(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := IssueAgent("https://bot.example", ca, now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("does not chain to its CA: %v", err)
	}
	if !cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %s, want the CA's %s", cert.NotAfter, ca.Cert.NotAfter)
	}
}

func TestCheckAgentURL(t *testing.T) {
	for _, tc := range []struct{ url, err string }{
		{"https://bot.example", ""},
		{"https://bot.example:8443/agent/", ""},
		{"http://bot.example", "want an https:// URL"},
		{"bot.example", "want an https:// URL"},
		{"https://", "no host"},
		{"https://u:p@bot.example", "user information"},
		{"https://bot.example/?", "a query or fragment"},
		{"https://bot.example/#x", "a query or fragment"},
		{"https://BOT.example", "lower case"},
		{"HTTPS://bot.example", "lower case"},
		{"https://bot.example/\x00", "invalid control character"},
	} {
		err := CheckAgentURL(tc.url)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("CheckAgentURL(%q) = %v, want %q", tc.url, err, tc.err)
		}
	}
}
