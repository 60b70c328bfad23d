// Package config is bin/server's configuration: one tree of structs that
// the flags fill, a YAML file fills (strictly: an unknown key or a wrong
// type is an error naming the file, the line and the key), and the server
// package takes as it is. Each flag is a key of the same name with '_' for
// '-'; Validate checks the whole tree, naming each problem's flag or the
// file, line and key.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/server"
)

// Config is everything bin/server is told. The server's and the gateway's
// keys are the public package's own structs; the rest is the process's
// (addresses, logs).
type Config struct {
	server.Config        `yaml:",inline"`
	server.GatewayConfig `yaml:",inline"`
	server.ACMEConfig    `yaml:",inline"`

	// ACMECACert is the file of roots for a private ACME server.
	ACMECACert string `yaml:"acme_cacert"`
	// ListenAddr is the HTTPS address, HTTPAddr an optional plain HTTP one
	// (ACME http-01 and redirects).
	ListenAddr string `yaml:"listen_addr"`
	HTTPAddr   string `yaml:"http_addr"`
	// AccessLog is a file, "-" for stderr, or "" or "off".
	AccessLog string `yaml:"access_log"`
	// AdminAddr serves /metrics, /healthz and /readyz; AdminPprof adds
	// Go's /debug/pprof there; PprofAddr serves it alone (loopback only).
	AdminAddr  string `yaml:"admin_addr"`
	AdminPprof bool   `yaml:"admin_pprof"`
	PprofAddr  string `yaml:"pprof_addr"`
	// LogFormat is text or json.
	LogFormat       string        `yaml:"log_format"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Verbose logs a line per connection.
	Verbose bool `yaml:"v"`
}

// Defaults returns the configuration of a server given no flag and no
// key.
func Defaults() Config {
	var c Config
	c.Policy = server.PolicyRequest
	c.ListenAddr = "localhost:8775"
	c.HandshakeTimeout = 10 * time.Second
	c.MaxHandshakes = 1024
	c.MaxHelloBytes = 32 << 20
	c.ReadHeaderTimeout = 10 * time.Second
	c.IdleTimeout = 2 * time.Minute
	c.ShutdownTimeout = 10 * time.Second
	c.LogFormat = "text"
	c.ResponseHeaderTimeout = 30 * time.Second
	c.MaxUpstreamConns = 1024
	c.MaxRequestBody = 10 << 20
	c.SignatureSkew = time.Minute
	c.SignatureMaxValidity = time.Hour
	c.SignatureKeysMaxStale = time.Hour
	c.RedisTimeout = 50 * time.Millisecond
	c.CacheDir = "acme-cache"
	return c
}

// A field is one key: its name in the file, and where its value lives.
type field struct {
	key string
	v   reflect.Value
}

// fields lists c's keys, in order, inline structs flattened.
func (c *Config) fields() []field {
	var out []field
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			tag := t.Field(i).Tag.Get("yaml")
			switch {
			case tag == "-" || tag == "":
			case tag == ",inline":
				walk(v.Field(i))
			default:
				out = append(out, field{key: tag, v: v.Field(i)})
			}
		}
	}
	walk(reflect.ValueOf(c).Elem())
	return out
}

// A KeyValue is a key and its value.
type KeyValue struct {
	Key   string
	Value any
}

// Fields lists c's keys and their values, in order.
func (c *Config) Fields() []KeyValue {
	fs := c.fields()
	out := make([]KeyValue, len(fs))
	for i, f := range fs {
		out[i] = KeyValue{f.key, f.v.Interface()}
	}
	return out
}

// FlagName is a key's flag: its name with '-' for '_'.
func FlagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// Flags defines on fs a flag for every key of c that a flag can say (rules
// need the file), each filling c's field and defaulting to its value now.
func (c *Config) Flags(fs *flag.FlagSet) {
	for _, f := range c.fields() {
		name := FlagName(f.key)
		switch p := f.v.Addr().Interface().(type) {
		case *string:
			fs.StringVar(p, name, *p, "")
		case *bool:
			fs.BoolVar(p, name, *p, "")
		case *int:
			fs.IntVar(p, name, *p, "")
		case *time.Duration:
			fs.DurationVar(p, name, *p, "")
		case *int64:
			fs.Var((*sizeValue)(p), name, "")
		case *server.Policy:
			fs.TextVar(p, name, *p, "")
		case *[]string:
			fs.Var((*listValue)(p), name, "")
		case *[]netip.Prefix:
			fs.Var((*prefixesValue)(p), name, "")
		}
	}
}

// sizeValue is a byte count flag (ParseSize).
type sizeValue int64

func (s *sizeValue) String() string { return strconv.FormatInt(int64(*s), 10) }
func (s *sizeValue) Set(v string) error {
	n, err := ParseSize(v)
	*s = sizeValue(n)
	return err
}

// listValue is a comma-separated list.
type listValue []string

func (l *listValue) String() string { return strings.Join(*l, ",") }
func (l *listValue) Set(v string) error {
	*l = nil
	if v != "" {
		*l = strings.Split(v, ",")
	}
	return nil
}

// prefixesValue is a comma-separated list of CIDR prefixes or addresses.
type prefixesValue []netip.Prefix

func (p *prefixesValue) String() string { return fmt.Sprint(*p) }
func (p *prefixesValue) Set(v string) error {
	*p = nil
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		pf, err := ParsePrefix(f)
		if err != nil {
			return err
		}
		*p = append(*p, pf)
	}
	return nil
}

// ParsePrefix parses a CIDR prefix (masked) or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR prefix", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseSize parses a byte count: digits, optionally followed by KiB, MiB or
// GiB (or k, M, G, as powers of 1024). Empty and 0 are no limit, returned
// as -1; a size past what 63 bits hold is an error.
func ParseSize(s string) (int64, error) {
	if s == "" {
		return -1, nil
	}
	num := strings.TrimRight(s, "KMGiBkb")
	unit := s[len(num):]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB or GiB)", s)
	}
	shift, ok := map[string]uint{"": 0, "k": 10, "K": 10, "KiB": 10, "M": 20, "MiB": 20, "G": 30, "GiB": 30}[unit]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q (want KiB, MiB or GiB)", s, unit)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q is too large (at most %d bytes)", s, int64(math.MaxInt64))
	}
	if n == 0 {
		return -1, nil
	}
	return n << shift, nil
}

// A File is a configuration as read from a file, with where each key is.
type File struct {
	Config
	Name   string
	lines  map[string]int    // by key path ("cert", "rules[2].match.path")
	values map[string]string // scalar values, by key path
}

// Load reads a configuration file over Defaults. Decoding stops at the
// first unknown key or wrong type: the error names the file, the line and
// the key. Load does not Validate.
func Load(name string) (*File, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	return Parse(name, data)
}

// Parse is Load for the file's contents.
func Parse(name string, data []byte) (_ *File, err error) {
	defer func() {
		// go-yaml panics on some malformed documents (a nil node under
		// a tag, FuzzParse found): the file is refused, not the process.
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: not a YAML document the parser can read (%v)", name, r)
		}
	}()
	f := &File{Config: Defaults(), Name: name, lines: map[string]int{}, values: map[string]string{}}
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, f.yamlError(err)
	}
	for _, doc := range file.Docs {
		keyLines(doc.Body, "", f.lines, f.values)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return f, nil
	}
	// Values of our own types are parsed here, and remembered: their
	// errors come without a position, which the value then gives.
	var badValue string
	custom := func(parse func(string) error) func([]byte) error {
		return func(b []byte) error {
			s := unquote(b)
			if err := parse(s); err != nil {
				badValue = s
				return err
			}
			return nil
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.Strict(),
		yaml.CustomUnmarshaler(func(n *int64, b []byte) error {
			return custom(func(s string) (err error) { *n, err = ParseSize(s); return err })(b)
		}),
		yaml.CustomUnmarshaler(func(p *netip.Prefix, b []byte) error {
			return custom(func(s string) (err error) { *p, err = ParsePrefix(s); return err })(b)
		}),
		yaml.CustomUnmarshaler(func(d *time.Duration, b []byte) error {
			return custom(func(s string) (err error) {
				if *d, err = time.ParseDuration(s); err != nil {
					return fmt.Errorf("%q is not a duration (10s, 2m, 1h30m)", s)
				}
				return nil
			})(b)
		}),
		yaml.CustomUnmarshaler(func(p *server.Policy, b []byte) error {
			return custom(func(s string) (err error) { *p, err = server.ParsePolicy(s); return err })(b)
		}))
	if err := dec.Decode(&f.Config); err != nil {
		var ye yaml.Error
		if !errors.As(err, &ye) && badValue != "" {
			for key, v := range f.values {
				if v == badValue {
					return nil, f.at(key, key+": "+err.Error())
				}
			}
		}
		return nil, f.yamlError(err)
	}
	return f, nil
}

// unquote is a YAML scalar's text without its quotes.
func unquote(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// keyLines records the line of every key under n, and each scalar's
// value, by its path.
func keyLines(n ast.Node, prefix string, out map[string]int, values map[string]string) {
	switch n := n.(type) {
	case *ast.MappingNode:
		for _, kv := range n.Values {
			keyLines(kv, prefix, out, values)
		}
	case *ast.MappingValueNode:
		path := n.Key.String()
		if prefix != "" {
			path = prefix + "." + path
		}
		if _, ok := out[path]; !ok {
			out[path] = n.Key.GetToken().Position.Line
		}
		if sc, ok := n.Value.(ast.ScalarNode); ok {
			values[path] = unquote([]byte(sc.String()))
		}
		keyLines(n.Value, path, out, values)
	case *ast.SequenceNode:
		for i, v := range n.Values {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			out[p] = v.GetToken().Position.Line
			if sc, ok := v.(ast.ScalarNode); ok {
				values[p] = unquote([]byte(sc.String()))
			}
			keyLines(v, p, out, values)
		}
	}
}

// yamlError names the file, the line and the key of a decoding error.
func (f *File) yamlError(err error) error {
	var ye yaml.Error
	if !errors.As(err, &ye) || ye.GetToken() == nil {
		return fmt.Errorf("%s: %v", f.Name, err)
	}
	line := ye.GetToken().Position.Line
	key := ""
	for k, l := range f.lines {
		// The deepest key on the error's line.
		if l == line && len(k) > len(key) {
			key = k
		}
	}
	msg := ye.GetMessage()
	var te *yaml.TypeError
	if errors.As(err, &te) {
		// (Not the Go field's name and type: the key's, and what it
		// wants.)
		msg = fmt.Sprintf("want %s, not %s", kindName(te.DstType), kindName(te.SrcType))
	}
	if key != "" && !strings.Contains(msg, key) {
		msg = key + ": " + msg
	}
	return fmt.Errorf("%s:%d: %s", f.Name, line, msg)
}

// kindName says what a Go type holds, in a configuration's words.
func kindName(t reflect.Type) string {
	if t == nil {
		return "nothing"
	}
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "a duration (10s, 2m)"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Map, t.Kind() == reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// A Problem is one thing wrong with a configuration: the key it is about
// (for the file's line) and what, in words that name the keys as the
// source spells them.
type Problem struct {
	Key string
	Msg string
}

// Validate checks c as a whole and completes what follows from it (the
// pages' path, "no cap" for upstream_max_conns 0). name spells a key as
// its source does: FlagName with a dash for flags, the key for a file.
func (c *Config) Validate(name func(key string) string) []Problem {
	var probs []Problem
	bad := func(key, format string, a ...any) {
		probs = append(probs, Problem{Key: key, Msg: fmt.Sprintf(format, a...)})
	}
	k := name
	acme := len(c.Domains) > 0
	sitesCerts := len(c.Sites) > 0 && !slices.ContainsFunc(c.Sites, func(s server.Site) bool { return s.CertFile == "" && s.KeyFile == "" })
	switch {
	case acme && (c.CertFile != "" || c.KeyFile != ""):
		bad("acme_domain", "%s replaces %s and %s: give one or the other", k("acme_domain"), k("cert"), k("key"))
	case !acme && (c.CertFile == "" || c.KeyFile == "") && !sitesCerts:
		if len(c.Sites) > 0 {
			bad("cert", "%s and %s are required, for every site or once for all (or %s)", k("cert"), k("key"), k("acme_domain"))
		} else {
			bad("cert", "%s and %s are required (or %s)", k("cert"), k("key"), k("acme_domain"))
		}
	case !acme && (c.DirectoryURL != "" || c.Email != "" || c.ACMECACert != ""):
		bad("acme_directory", "%s, %s and %s go with %s", k("acme_directory"), k("acme_email"), k("acme_cacert"), k("acme_domain"))
	}
	// (With sites, these hold of each site as resolved: validateSites.)
	single := len(c.Sites) == 0
	if single && c.ClientCRLFile != "" && c.ClientCAFile == "" && c.BotCAFile == "" {
		bad("client_crl", "%s needs %s or %s: the CRLs are checked against their CAs", k("client_crl"), k("client_cacert"), k("bot_cacert"))
	}
	if single && c.Policy != server.PolicyRequest && c.ClientCAFile == "" && c.BotCAFile == "" && c.SignatureAgentsFile == "" {
		bad("client_auth", "%s %s needs %s, %s or %s (agents vouch for their certificates)", k("client_auth"), c.Policy, k("client_cacert"), k("bot_cacert"), k("signature_agents"))
	}
	if single && c.Policy == server.PolicyAlways && c.ClientCAFile == "" && c.SignatureAgentsFile == "" {
		bad("client_auth", "%s always needs %s (for clients that send no flag) or %s", k("client_auth"), k("client_cacert"), k("signature_agents"))
	}
	if c.PprofAddr != "" {
		if err := CheckLoopback(c.PprofAddr); err != nil {
			bad("pprof_addr", "%s: %v", k("pprof_addr"), err)
		}
	}
	if c.AdminPprof {
		if c.AdminAddr == "" {
			bad("admin_pprof", "%s needs %s", k("admin_pprof"), k("admin_addr"))
		} else if err := CheckLoopback(c.AdminAddr); err != nil {
			bad("admin_addr", "%s: %s %v", k("admin_pprof"), k("admin_addr"), err)
		}
	}
	if c.MaxHandshakes <= 0 {
		bad("max_handshakes", "%s must be positive, not %d", k("max_handshakes"), c.MaxHandshakes)
	}
	if c.MaxHelloBytes <= 0 {
		bad("max_hello_memory", "%s: want a positive size", k("max_hello_memory"))
	}
	upstream := c.Upstream != "" || slices.ContainsFunc(c.Sites, func(s server.Site) bool { return s.Upstream != "" })
	switch {
	case c.PagesPath == "" && !upstream:
		c.PagesPath = "/"
	case c.PagesPath == "off" || c.PagesPath == "":
		c.PagesPath = ""
		if !upstream {
			bad("pages", "%s off leaves nothing to serve without %s", k("pages"), k("upstream"))
		}
	case !strings.HasPrefix(c.PagesPath, "/"):
		bad("pages", "%s must be a path starting with / or off, not %q", k("pages"), c.PagesPath)
	case c.PagesPath == "/" && upstream:
		bad("pages", "%s / leaves no path to the origin: mount the pages under one, such as /.well-known/req-mtls/", k("pages"))
	case !strings.HasSuffix(c.PagesPath, "/"):
		c.PagesPath += "/"
	}
	switch {
	case c.MaxUpstreamConns < 0:
		bad("upstream_max_conns", "%s must be 0 (no cap) or more, not %d", k("upstream_max_conns"), c.MaxUpstreamConns)
	case c.MaxUpstreamConns == 0:
		c.MaxUpstreamConns = -1 // the gateway's "no cap"
	}
	if c.SignatureSkew <= 0 || c.SignatureSkew > time.Hour {
		bad("signature_skew", "%s must be positive and at most an hour, not %v", k("signature_skew"), c.SignatureSkew)
	}
	if c.SignatureMaxValidity <= 0 {
		bad("signature_max_validity", "%s must be positive, not %v", k("signature_max_validity"), c.SignatureMaxValidity)
	}
	if c.SignatureKeysMaxStale <= 0 {
		bad("signature_keys_max_stale", "%s must be positive, not %v", k("signature_keys_max_stale"), c.SignatureKeysMaxStale)
	}
	if c.RedisCAFile != "" && !strings.HasPrefix(c.Redis, "rediss://") {
		bad("redis_cacert", "%s goes with a %s rediss:// URL", k("redis_cacert"), k("redis"))
	}
	if c.RedisTimeout <= 0 {
		bad("redis_timeout", "%s must be positive, not %v", k("redis_timeout"), c.RedisTimeout)
	}
	if c.SignatureAgentsCAFile != "" && c.SignatureAgentsFile == "" {
		bad("signature_agents_cacert", "%s goes with %s", k("signature_agents_cacert"), k("signature_agents"))
	}
	if !upstream && (c.UpstreamCertFile != "" || c.UpstreamKeyFile != "" || c.UpstreamCAFile != "" || c.XFCC || c.MaxResponseBody != 0) {
		bad("upstream", "%s , %s and %s go with %s", k("upstream")+"-*", k("xfcc"), k("max_response_body"), k("upstream"))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"upstream_timeout", c.ResponseHeaderTimeout}, {"handshake_timeout", c.HandshakeTimeout}, {"read_header_timeout", c.ReadHeaderTimeout}, {"idle_timeout", c.IdleTimeout}, {"shutdown_timeout", c.ShutdownTimeout}} {
		if d.v <= 0 {
			bad(d.key, "%s must be positive, not %v", k(d.key), d.v)
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format", "%s must be text or json, not %q", k("log_format"), c.LogFormat)
	}
	if _, rp := policy.Compile(c.Rules, policy.NewLocal(1)); rp != nil {
		for _, p := range rp {
			key := fmt.Sprintf("rules[%d].%s", p.Index, p.Key)
			bad(key, "%s: %s", key, p.Msg)
		}
	}
	probs = append(probs, c.validateSites()...)
	return probs
}

// validateSites checks each of sites, resolved (a key a site leaves out
// is the top level's): its hosts, its certificate, its client
// authentication, its rules. Sites are the file's alone: the problems
// name file keys.
func (c *Config) validateSites() []Problem {
	var probs []Problem
	bad := func(key, format string, a ...any) {
		probs = append(probs, Problem{Key: key, Msg: key + ": " + fmt.Sprintf(format, a...)})
	}
	hosts := map[string]int{}
	for i, raw := range c.Sites {
		at := fmt.Sprintf("sites[%d]", i)
		st := raw.Resolved(c.Config)
		if len(st.Hosts) == 0 {
			bad(at+".hosts", "every site needs hosts: the names it answers to")
		}
		for j, h := range st.Hosts {
			lh := strings.ToLower(h)
			switch {
			case h == "" || strings.ContainsAny(h, " /:") || (strings.Contains(h, "*") && (!strings.HasPrefix(h, "*.") || strings.Count(h, "*") > 1)):
				bad(fmt.Sprintf("%s.hosts[%d]", at, j), "%q: want a DNS name, or *.name for one label in front of name", h)
			case hosts[lh] != 0:
				bad(fmt.Sprintf("%s.hosts[%d]", at, j), "%q is also sites[%d]'s", h, hosts[lh]-1)
			default:
				hosts[lh] = i + 1
			}
		}
		if (raw.CertFile == "") != (raw.KeyFile == "") {
			bad(at+".cert", "cert and key go together")
		}
		if raw.Upstream == "" && c.Upstream == "" && c.PagesPath == "" {
			bad(at, "no upstream, and pages off: the site would have nothing to serve; give it an upstream (or one at the top level)")
		}
		if st.ClientCRLFile != "" && st.ClientCAFile == "" && st.BotCAFile == "" {
			bad(at+".client_crl", "client_crl needs client_cacert or bot_cacert: the CRLs are checked against their CAs")
		}
		if *st.Policy != server.PolicyRequest && st.ClientCAFile == "" && st.BotCAFile == "" && st.SignatureAgentsFile == "" {
			bad(at+".client_auth", "client_auth %s needs client_cacert, bot_cacert or signature_agents", *st.Policy)
		}
		if *st.Policy == server.PolicyAlways && st.ClientCAFile == "" && st.SignatureAgentsFile == "" {
			bad(at+".client_auth", "client_auth always needs client_cacert (for clients that send no flag) or signature_agents")
		}
		if _, rp := policy.Compile(raw.Rules, policy.NewLocal(1)); rp != nil {
			for _, p := range rp {
				key := fmt.Sprintf("%s.rules[%d].%s", at, p.Index, p.Key)
				probs = append(probs, Problem{Key: key, Msg: key + ": " + p.Msg})
			}
		}
	}
	return probs
}

// Validate checks the file's configuration: each problem is an error
// "FILE:LINE: what", the line being its key's (or the file's name alone
// for a key the file lacks).
func (f *File) Validate() error {
	var errs []error
	for _, p := range f.Config.Validate(func(key string) string { return key }) {
		errs = append(errs, f.at(p.Key, p.Msg))
	}
	return errors.Join(errs...)
}

// at prefixes msg with the file and the line of key, or of the nearest key
// above it that the file has.
func (f *File) at(key, msg string) error {
	for k := key; k != ""; {
		if line, ok := f.lines[k]; ok {
			return fmt.Errorf("%s:%d: %s", f.Name, line, msg)
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return fmt.Errorf("%s: %s", f.Name, msg)
}

// CheckLoopback accepts host:port addresses whose host is a loopback IP or
// "localhost": pprof exposes the process's memory and must not face a
// network.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address (use 127.0.0.1:PORT, [::1]:PORT or localhost:PORT)", addr)
}
