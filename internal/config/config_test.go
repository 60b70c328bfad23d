package config

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/req-mtls/req-mtls/server"
)

// The same settings by flags and by a file make the same Config.
func TestFlagsAndFileAgree(t *testing.T) {
	byFlags := Defaults()
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	byFlags.Flags(fs)
	err := fs.Parse([]string{"-cert", "s.crt", "-key", "s.key", "-client-cacert", "ca.crt", "-client-auth", "verify",
		"-upstream", "http://127.0.0.1:8080", "-max-request-body", "1MiB", "-upstream-max-conns", "0",
		"-proxy-protocol-from", "10.0.0.0/8,192.0.2.1", "-signature-directory", "a.pem,b.pem",
		"-idle-timeout", "30s", "-access-log", "-", "-v"})
	if err != nil {
		t.Fatal(err)
	}
	if p := byFlags.Validate(func(k string) string { return "-" + FlagName(k) }); p != nil {
		t.Fatal(p)
	}
	f, err := Parse("c.yaml", []byte(`
cert: s.crt
key: s.key
client_cacert: ca.crt
client_auth: verify
upstream: http://127.0.0.1:8080
max_request_body: 1MiB
upstream_max_conns: 0
proxy_protocol_from: [10.0.0.0/8, 192.0.2.1]
signature_directory: [a.pem, b.pem]
idle_timeout: 30s
access_log: "-"
v: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(byFlags, f.Config) {
		t.Errorf("by flags:\n%+v\nby file:\n%+v", byFlags, f.Config)
	}
	want := Defaults()
	want.CertFile, want.KeyFile, want.ClientCAFile, want.Policy = "s.crt", "s.key", "ca.crt", server.PolicyVerify
	want.Upstream, want.MaxRequestBody, want.MaxUpstreamConns = "http://127.0.0.1:8080", 1<<20, -1
	want.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")}
	want.SignatureDirectoryKeyFiles = []string{"a.pem", "b.pem"}
	want.IdleTimeout, want.AccessLog, want.Verbose = 30*time.Second, "-", true
	if !reflect.DeepEqual(want, f.Config) {
		t.Errorf("by file:\n%+v\nwant:\n%+v", f.Config, want)
	}
}

// Every flag is a key, and every key but the rules and the sites a flag.
func TestEveryKeyAFlag(t *testing.T) {
	c := Defaults()
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	c.Flags(fs)
	for _, kv := range c.Fields() {
		if kv.Key == "rules" || kv.Key == "sites" {
			continue
		}
		if fs.Lookup(FlagName(kv.Key)) == nil {
			t.Errorf("key %s has no flag -%s", kv.Key, FlagName(kv.Key))
		}
	}
	for _, name := range []string{"cert", "key", "listen-addr", "client-cacert", "client-auth", "upstream", "signature-agents", "access-log", "admin-addr", "acme-domain", "acme-cacert", "max-hello-memory", "v"} {
		if fs.Lookup(name) == nil {
			t.Errorf("no flag -%s", name)
		}
	}
}

func TestFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"UnknownKey", "cert: a\nkey: b\nlisten_adr: x\n", `c.yaml:3: unknown field "listen_adr"`},
		{"WrongType", "cert: a\nkey: b\nmax_handshakes: lots\n", `c.yaml:3: max_handshakes: want a number, not a string`},
		{"WrongDuration", "cert: a\nkey: b\nidle_timeout: soon\n", `c.yaml:3: idle_timeout: "soon" is not a duration`},
		{"BadPolicy", "cert: a\nkey: b\nclient_auth: sometimes\n", `c.yaml:3: client_auth: unknown client-auth policy "sometimes"`},
		{"BadSize", "cert: a\n\nmax_request_body: 10XB\nkey: b\n", `c.yaml:3: max_request_body: "10XB" is not a size`},
		{"BadPrefix", "cert: a\nkey: b\nproxy_protocol_from:\n  - 10.0.0.0/8\n  - lb.example\n", `c.yaml:5: proxy_protocol_from[1]: "lb.example" is neither an address nor a CIDR prefix`},
		{"UnknownRuleKey", "cert: a\nkey: b\nrules:\n  - name: x\n    action: allow\n    matc: {}\n", `c.yaml:6: rules[0].matc: unknown field "matc"`},
		{"Syntax", "cert: [a\n", `c.yaml:1: sequence end token ']' not found`},
		{"UnknownSiteKey", "sites:\n  - hosts: [a.example]\n    upstrem: http://x\n", `c.yaml:3: sites[0].upstrem: unknown field "upstrem"`},
		{"BadSitePolicy", "sites:\n  - hosts: [a.example]\n\n    client_auth: often\n", `c.yaml:4: sites[0].client_auth: unknown client-auth policy "often"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: %v; want an error with %q", err, tc.want)
			}
		})
	}
}

func TestValidateNamesLines(t *testing.T) {
	f, err := Parse("c.yaml", []byte(`key: b
handshake_timeout: 0s
rules:
  - name: x
    match:
      cert: maybe
    action: deny
  - name: y
    action: limit
`))
	if err != nil {
		t.Fatal(err)
	}
	want := `c.yaml: cert and key are required (or acme_domain)
c.yaml:2: handshake_timeout must be positive, not 0s
c.yaml:6: rules[0].match.cert: "maybe": want valid, invalid, none
c.yaml:8: rules[1].rate: a limit needs a rate, such as 10/s or 600/m
c.yaml:8: rules[1].burst: a limit needs a burst of 1 or more`
	if err := f.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate:\n%v\nwant:\n%s", err, want)
	}
}

// TestSites: a site's keys as read, each key a site leaves out the top
// level's, and every problem of a site named by its file line and key.
func TestSites(t *testing.T) {
	f, err := Parse("c.yaml", []byte(`cert: s.crt
key: s.key
client_cacert: ca.crt
upstream: http://127.0.0.1:8080
rules:
  - {name: top, action: allow}
sites:
  - hosts: [a.example]
  - hosts: [b.example, "*.b.example"]
    cert: b.crt
    key: b.key
    client_auth: require
    bot_cacert: bot.crt
    upstream: http://127.0.0.1:8081
    rules: []
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	sites := f.SitesOf()
	require, request := server.PolicyRequire, server.PolicyRequest
	want := []server.Site{
		{Hosts: []string{"a.example"}, CertFile: "s.crt", KeyFile: "s.key", ClientCAFile: "ca.crt", Policy: &request,
			Rules: []server.Rule{{Name: "top", Action: "allow"}}},
		{Hosts: []string{"b.example", "*.b.example"}, CertFile: "b.crt", KeyFile: "b.key", ClientCAFile: "ca.crt", BotCAFile: "bot.crt",
			Policy: &require, Upstream: "http://127.0.0.1:8081", Rules: []server.Rule{}},
	}
	if !reflect.DeepEqual(sites, want) {
		t.Errorf("sites:\n%+v\nwant:\n%+v", sites, want)
	}

	f, err = Parse("c.yaml", []byte(`sites:
  - hosts: [a.example]
    cert: a.crt
    key: a.key
    rules:
      - name: x
        action: block
  - cert: b.crt
    key: b.key
  - hosts: [A.example, "b*.example"]
    cert: c.crt
    client_auth: verify
  - hosts: [d.example]
    cert: d.crt
    key: d.key
    upstream: http://127.0.0.1:8081
`))
	if err != nil {
		t.Fatal(err)
	}
	wantErr := `c.yaml:2: sites[0]: no upstream, and pages off: the site would have nothing to serve; give it an upstream (or one at the top level)
c.yaml:7: sites[0].rules[0].action: "block": want allow, deny, require or limit
c.yaml:8: sites[1].hosts: every site needs hosts: the names it answers to
c.yaml:8: sites[1]: no upstream, and pages off: the site would have nothing to serve; give it an upstream (or one at the top level)
c.yaml:10: sites[2].hosts[0]: "A.example" is also sites[0]'s
c.yaml:10: sites[2].hosts[1]: "b*.example": want a DNS name, or *.name for one label in front of name
c.yaml:11: sites[2].cert: cert and key go together
c.yaml:10: sites[2]: no upstream, and pages off: the site would have nothing to serve; give it an upstream (or one at the top level)
c.yaml:12: sites[2].client_auth: client_auth verify needs client_cacert, bot_cacert or signature_agents`
	if err := f.Validate(); err == nil || err.Error() != wantErr {
		t.Errorf("Validate:\n%v\nwant:\n%s", err, wantErr)
	}
}

// TestDocsExamples: every YAML example of docs/config.md reads, and the
// whole configurations among them (those with a certificate) validate.
func TestDocsExamples(t *testing.T) {
	data, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(data), "```yaml\n")[1:]
	if len(blocks) < 3 {
		t.Fatalf("%d YAML examples in docs/config.md, want 3 or more", len(blocks))
	}
	for i, b := range blocks {
		b, _, _ = strings.Cut(b, "```")
		f, err := Parse(fmt.Sprintf("example %d", i+1), []byte(b))
		if err != nil {
			t.Errorf("%v\n%s", err, b)
			continue
		}
		if strings.Contains(b, "cert:") {
			if err := f.Validate(); err != nil {
				t.Errorf("%v\n%s", err, b)
			}
		}
	}
}
