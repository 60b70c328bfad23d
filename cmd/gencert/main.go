// Command gencert writes the certificates for trying request mTLS: a root CA,
// a server certificate for localhost and a client certificate for an
// automated client, with fresh keys.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/req-mtls/req-mtls/internal/certs"
)

const usage = `usage: gencert [-dir DIR] [-host NAME]... [-ca-key FILE] [-force]

Writes into DIR (default testdata/certs):
  rootCA.crt, rootCA.key   a root CA (rootCA.key only when the key is new)
  server.crt, server.key   for localhost, 127.0.0.1 and ::1 (and -host names)
  client.crt, client.key   for client.example, with the clientAuth usage

Keys are fresh ECDSA P-256 keys in PKCS#8 PEM, written with mode 0600.
Existing files are kept unless -force is given.

Options:
  -dir DIR          output directory (default testdata/certs)
  -host NAME        add a DNS name or IP address to the server certificate;
                    repeat or separate with commas
  -client-name NAME DNS name of the client certificate (default client.example)
  -ca-key FILE      sign with this CA key instead of a new one. With RFC 9500's
                    testRSA4096 key (RFC 9500, Section 2.1; a public test key,
                    never for real use) the root takes the public demo's exact
                    subject, so client.crt chains to the demo server's root.
  -force            overwrite existing files
  -check-demo FILE  only check that the certificate in FILE is issued under the
                    public demo's root subject; exit 0 if so, 1 if not
`

type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }
func (h *hostList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			return errors.New("empty host name")
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
	caKeyFile := fs.String("ca-key", "", "")
	force := fs.Bool("force", false, "")
	checkDemo := fs.String("check-demo", "", "")
	fs.Var(&hosts, "host", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "gencert: %v\nrun 'gencert -h' for usage\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gencert: unexpected argument %q\nrun 'gencert -h' for usage\n", fs.Arg(0))
		return 2
	}
	if *checkDemo != "" {
		c, err := certs.LoadCertificate(*checkDemo)
		if err != nil {
			fmt.Fprintf(stderr, "gencert: error: %v\n", err)
			return 1
		}
		if !certs.ChainsToDemoRoot(c) {
			fmt.Fprintf(stderr, "gencert: %s is issued by %q, not under the public demo's root\n", *checkDemo, c.Issuer.String())
			return 1
		}
		fmt.Fprintf(stdout, "%s is issued under the public demo's root subject\n", *checkDemo)
		return 0
	}
	opts := certs.Options{Dir: *dir, Hosts: hosts, ClientName: *clientName, Force: *force}
	if *caKeyFile != "" {
		key, err := certs.LoadKey(*caKeyFile)
		if err != nil {
			fmt.Fprintf(stderr, "gencert: error: %v\n", err)
			return 1
		}
		opts.CAKey = key
	}
	res, err := certs.WriteSet(opts)
	if err != nil {
		fmt.Fprintf(stderr, "gencert: error: %v\n", err)
		return 1
	}
	for _, f := range res.Files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	if res.DemoRoot {
		fmt.Fprintln(stdout, "the CA key is RFC 9500's testRSA4096: the root has the public demo's subject, and client.crt chains to the demo server's root")
	}
	return 0
}
