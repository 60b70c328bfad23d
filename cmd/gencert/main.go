// Command gencert writes the certificates for trying request mTLS: a root CA,
// a server certificate for localhost and a client certificate for an
// automated client, with fresh keys; or a client certificate alone, under an
// existing CA.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/safetext"
	"github.com/req-mtls/req-mtls/internal/version"
)

const usage = `usage: gencert [-dir DIR] [-host NAME]... [-client-name NAME] [-ca-name NAME] [-force]
       gencert -ca-cert FILE -ca-key FILE [-client-only] [-client-name NAME] [-dir DIR] [-force]
       gencert -ca-key testRSA4096.key -client-only [-client-name NAME] [-dir DIR] [-force]
       gencert -agent URL [-signature-key FILE] [-ca-cert FILE -ca-key FILE] [-dir DIR] [-force]
       gencert -fingerprint FILE
       gencert -check-demo FILE [-ca-key testRSA4096.key]
       gencert -check-root FILE

Writes into DIR (default testdata/certs):
  rootCA.crt, rootCA.key   a new root CA (rootCA.key only when the key is new)
  server.crt, server.key   for localhost, 127.0.0.1 and ::1 (and -host names)
  client.crt, client.key   for client.example, with the clientAuth usage

Keys are fresh ECDSA P-256 keys in PKCS#8 PEM, written with mode 0600.
Existing files are kept unless -force is given.

Options:
  -dir DIR           output directory (default testdata/certs)
  -host NAME         add a DNS name or IP address to the server certificate;
                     repeat or separate with commas
  -client-name NAME  DNS name of the client certificate (default
                     client.example); the name the server reports
  -ca-name NAME      common name of the new root (default "req-mtls
                     development root"): give the roots of different stores
                     (-client-cacert, -bot-cacert) different names, so that
                     they can be told apart in logs and CertificateRequests
  -force             overwrite existing files

Issuing under an existing CA (no new root is made or written):
  -ca-cert FILE      the CA certificate to issue under (with -ca-key)
  -ca-key FILE       its private key. Without -ca-cert: make the new root
                     with this key instead of a fresh one
  -client-only       write client.crt and client.key alone: one more client
                     (a second bot, say) under the same CA. Needs -ca-cert
                     and -ca-key, e.g.
                       gencert -ca-cert certs/rootCA.crt -ca-key certs/rootCA.key \
                               -client-only -client-name bot2.example -dir bot2

The public demo (https://req-mtls.research.cloudflare.com/debug) trusts
client certificates under a root whose key is RFC 9500's testRSA4096
(RFC 9500, Section 2.1; third_party/rfc9500/testRSA4096.key). With that key,
-ca-key ... -client-only issues client.crt under the demo root's exact
subject. It is a public test key: anyone can sign with it, so such a
certificate identifies no one, and gencert never makes a root from it.

Web Bot Auth:
  -signature-key FILE  make an Ed25519 key for signing requests (client
                     -sign-key) into FILE (PEM, mode 0600), its public JWKS
                     into FILE.jwks (for a site's -signature-agents, or your
                     own directory), and print its keyid (JWK thumbprint);
                     an existing FILE is kept unless -force

One bot identity on both layers, published once:
  -agent URL         write agent.crt and agent.key into DIR: a client
                     certificate (clientAuth) whose only name is the URI URL,
                     your agent's URL as sites list it (-signature-agents),
                     with a new ECDSA P-256 key. Self-signed unless
                     -ca-cert and -ca-key issue it: sites that list the agent
                     trust the certificate because its key is in the agent's
                     directory. With -signature-key FILE, the Ed25519 key for
                     signing requests too. Then serve the directory with both
                     keys:  server -signature-directory FILE,DIR/agent.key
  -fingerprint FILE  print the lines a site's deny list (-deny) takes for the
                     certificate or key in FILE (PEM, or a JWK): cert-sha256,
                     spki-sha256 and jwk

Checking:
  -check-demo FILE   check that the certificate in FILE is issued under the
                     public demo's root subject and valid now (with -ca-key
                     testRSA4096.key: also that the key signed it); exit 0 if
                     so, 1 if not
  -check-root FILE   check that no certificate in the PEM bundle FILE has
                     RFC 9500's testRSA4096 as its key: a root anyone can
                     sign under, which no local server should trust (older
                     versions of this project made one); exit 0 if none
                     has, 1 if one has
  -version           print the version and exit
`

type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }
func (h *hostList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			return errors.New("empty host name")
		}
		if err := certs.CheckHost(s); err != nil {
			return err
		}
		*h = append(*h, s)
	}
	return nil
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gencert", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var hosts hostList
	dir := fs.String("dir", "testdata/certs", "")
	clientName := fs.String("client-name", "client.example", "")
	caName := fs.String("ca-name", "", "")
	caCertFile := fs.String("ca-cert", "", "")
	caKeyFile := fs.String("ca-key", "", "")
	clientOnly := fs.Bool("client-only", false, "")
	force := fs.Bool("force", false, "")
	checkDemo := fs.String("check-demo", "", "")
	checkRoot := fs.String("check-root", "", "")
	showVersion := fs.Bool("version", false, "")
	sigKey := fs.String("signature-key", "", "")
	agent := fs.String("agent", "", "")
	fingerprint := fs.String("fingerprint", "", "")
	fs.Var(&hosts, "host", "")
	misuse := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "gencert: "+format+"\nrun 'gencert -h' for usage\n", a...)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		return misuse("%v", err)
	}
	if fs.NArg() > 0 {
		return misuse("unexpected argument %q", fs.Arg(0))
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String("gencert"))
		return 0
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "gencert: error: %v\n", err)
		return 1
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *fingerprint != "" {
		lines, err := certs.DescribeFile(*fingerprint)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, strings.Join(lines, "\n"))
		return 0
	}
	if set["agent"] {
		for _, f := range []string{"host", "client-name", "ca-name", "client-only", "check-demo", "check-root"} {
			if set[f] {
				return misuse("-%s does not go with -agent, which writes the agent certificate alone", f)
			}
		}
		if (*caCertFile == "") != (*caKeyFile == "") {
			return misuse("-agent issues under a CA only with both -ca-cert and -ca-key")
		}
		return writeAgent(*agent, *dir, *caCertFile, *caKeyFile, *sigKey, *force, stdout, stderr)
	}
	if *sigKey != "" {
		keyid, err := certs.WriteSignatureKey(*sigKey, *force)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "wrote %s and %s.jwks\nkeyid (JWK SHA-256 thumbprint): %s\n", *sigKey, *sigKey, keyid)
		return 0
	}

	if *checkDemo != "" {
		return check(*checkDemo, *caKeyFile, stdout, stderr)
	}
	if *checkRoot != "" {
		roots, err := certs.LoadBundle(*checkRoot)
		if err != nil {
			return fail(err)
		}
		for i, c := range roots {
			if certs.IsDemoKey(c.PublicKey) {
				fmt.Fprintf(stderr, "gencert: %s: certificate %d (%s) has RFC 9500's testRSA4096 as its key, a public test key: anyone can issue certificates under it\n",
					*checkRoot, i+1, safetext.Escape(c.Subject.String()))
				return 1
			}
		}
		fmt.Fprintf(stdout, "%s: no certificate has a public test key\n", *checkRoot)
		return 0
	}
	switch {
	case *caCertFile != "" && *caKeyFile == "":
		return misuse("-ca-cert needs -ca-key, the CA's private key")
	case *caCertFile != "" && set["ca-name"]:
		return misuse("-ca-name names a new root; with -ca-cert the CA exists already")
	case *clientOnly && *caKeyFile == "":
		return misuse("-client-only issues under an existing CA: give -ca-cert and -ca-key")
	case *clientOnly && len(hosts) > 0:
		return misuse("-host names the server certificate, which -client-only does not make")
	case *clientOnly && set["ca-name"]:
		return misuse("-ca-name names a new root, which -client-only does not make")
	}
	if err := certs.CheckDNSName(*clientName); err != nil {
		return misuse("-client-name: %v", err)
	}
	if set["ca-name"] && strings.TrimSpace(*caName) == "" {
		return misuse("-ca-name is empty")
	}

	opts := certs.Options{Dir: *dir, Hosts: hosts, ClientName: *clientName, CAName: *caName, ClientOnly: *clientOnly, Force: *force}
	if *caCertFile != "" {
		ca, err := certs.LoadAuthority(*caCertFile, *caKeyFile)
		if err != nil {
			return fail(err)
		}
		opts.CA = ca
	} else if *caKeyFile != "" {
		key, err := certs.LoadKey(*caKeyFile)
		if err != nil {
			return fail(err)
		}
		if *clientOnly && !certs.IsDemoKey(key.Public()) {
			return misuse("-client-only with -ca-key alone is for RFC 9500's testRSA4096 (the public demo); for your own CA give its certificate too, with -ca-cert")
		}
		opts.CAKey = key
	}
	res, err := certs.WriteSet(opts)
	if err != nil {
		return fail(err)
	}
	for _, f := range res.Files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	switch {
	case res.Demo:
		fmt.Fprintln(stdout, "the client certificate is issued under the public demo's root (RFC 9500's testRSA4096, a public test key: it identifies no one)")
	case opts.CA != nil:
		fmt.Fprintf(stdout, "issued under %s\n", safetext.Escape(opts.CA.Cert.Subject.String()))
	}
	return 0
}

// writeAgent is -agent: the agent certificate and key, and with sigKey the
// signing key, then what to publish.
func writeAgent(agentURL, dir, caCert, caKey, sigKey string, force bool, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "gencert: error: %v\n", err)
		return 1
	}
	if err := certs.CheckAgentURL(agentURL); err != nil {
		fmt.Fprintf(stderr, "gencert: -agent: %v\nrun 'gencert -h' for usage\n", err)
		return 2
	}
	o := certs.AgentOptions{Dir: dir, URL: agentURL, Force: force}
	if caCert != "" {
		ca, err := certs.LoadAuthority(caCert, caKey)
		if err != nil {
			return fail(err)
		}
		o.CA = ca
	}
	if sigKey != "" && !force {
		// Refuse before anything is written, not halfway.
		if _, err := os.Stat(sigKey); err == nil {
			return fail(fmt.Errorf("%s exists; use -force to overwrite", sigKey))
		}
	}
	files, cert, err := certs.WriteAgent(o)
	if err != nil {
		return fail(err)
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	if o.CA != nil {
		fmt.Fprintf(stdout, "issued under %s\n", safetext.Escape(o.CA.Cert.Subject.String()))
	} else {
		fmt.Fprintln(stdout, "self-signed: sites trust it by its key, listed in your directory")
	}
	lines, err := certs.Describe(cert)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(stdout, strings.Join(lines, "\n"))
	dirKeys := files[1]
	if sigKey != "" {
		keyid, err := certs.WriteSignatureKey(sigKey, force)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "wrote %s and %s.jwks\nkeyid (JWK SHA-256 thumbprint): %s\n", sigKey, sigKey, keyid)
		dirKeys = sigKey + "," + dirKeys
	}
	fmt.Fprintf(stdout, "publish both keys at %s/.well-known/http-message-signatures-directory, e.g.\n  server -signature-directory %s ...\n",
		strings.TrimSuffix(agentURL, "/"), dirKeys)
	return 0
}

// check is -check-demo: the certificate in name is issued under the public
// demo's root subject, valid now, and, given keyFile, signed by that key.
func check(name, keyFile string, stdout, stderr io.Writer) int {
	c, err := certs.LoadCertificate(name)
	if err != nil {
		fmt.Fprintf(stderr, "gencert: error: %v\n", err)
		return 1
	}
	if !certs.ChainsToDemoRoot(c) {
		fmt.Fprintf(stderr, "gencert: %s is issued by %q, not under the public demo's root\n", name, safetext.Escape(c.Issuer.String()))
		return 1
	}
	if now := time.Now(); now.Before(c.NotBefore) || now.After(c.NotAfter) {
		fmt.Fprintf(stderr, "gencert: %s is valid from %s to %s, not now\n", name, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		return 1
	}
	if keyFile != "" {
		key, err := certs.LoadKey(keyFile)
		if err != nil {
			fmt.Fprintf(stderr, "gencert: error: %v\n", err)
			return 1
		}
		if err := certs.VerifyDemoSignature(c, key.Public()); err != nil {
			fmt.Fprintf(stderr, "gencert: %s: %v\n", name, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s is issued under the public demo's root and signed by testRSA4096\n", name)
		return 0
	}
	fmt.Fprintf(stdout, "%s is issued under the public demo's root subject\n", name)
	return 0
}
