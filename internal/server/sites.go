package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/req-mtls/req-mtls/internal/auth"
	"github.com/req-mtls/req-mtls/internal/policy"
	"github.com/req-mtls/req-mtls/internal/webbotauth"
)

// A Site is one of the sites a Server serves on its listeners, as nginx's
// server blocks: the names it answers to, and what Config says of the one
// site otherwise (Files.TicketKeys excepted: tickets are the process's).
type Site struct {
	// Hosts are matched against the handshake's SNI and the request's
	// Host, without regard to case; "*.example.com" matches one label
	// in front of example.com.
	Hosts      []string
	Files      Files
	Policy     auth.Policy
	Handler    http.Handler
	Signatures *webbotauth.Verifier
	Rules      *policy.Engine
}

// site is a Site as served: its Authenticator and TLS config, its rules in
// force, and its handler (the rules, then its Handler, under the access
// log).
type site struct {
	hosts   []string // lower case
	auth    *auth.Authenticator
	tls     *tls.Config
	handler http.Handler
	rules   atomic.Pointer[policy.Engine]
}

func lowerAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(n)
	}
	return out
}

// checkHosts refuses a name that two sites claim, and a site past the
// first that names none (it could never be chosen).
func checkHosts(sites []*site) error {
	seen := map[string]int{}
	for i, st := range sites {
		if i > 0 && len(st.hosts) == 0 {
			return fmt.Errorf("sites[%d] has no hosts: only the first site, the default, may go without", i)
		}
		for _, h := range st.hosts {
			if h == "" || strings.ContainsAny(h, " /:") || (strings.Contains(h, "*") && (!strings.HasPrefix(h, "*.") || strings.Count(h, "*") > 1)) {
				return fmt.Errorf("sites[%d]: host %q: want a DNS name, or *.name for one label in front of name", i, h)
			}
			if j, dup := seen[h]; dup {
				return fmt.Errorf("sites[%d]: host %q is also sites[%d]'s", i, h, j)
			}
			seen[h] = i
		}
	}
	return nil
}

// hostMatches reports whether a site's host pattern (lower case) names
// name (lower case, no port).
func hostMatches(pattern, name string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*"); ok {
		label, tail, found := strings.Cut(name, ".")
		return found && label != "" && "."+tail == rest
	}
	return pattern == name
}

// siteNamed returns the site whose hosts name name (any case, without a
// port), exact names before wildcards; nil when none does.
func (s *Server) siteNamed(name string) *site {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	var wild *site
	for _, st := range s.sites {
		for _, h := range st.hosts {
			if h == name {
				return st
			}
			if wild == nil && hostMatches(h, name) {
				wild = st
			}
		}
	}
	return wild
}

// siteKey keys a connection's site in auth.Conn.Memo.
type siteKey struct{}

// dispatchTLS is the TLS config of a server of several sites: each
// handshake gets the config of the site its SNI names (the first when it
// names none, or sends none), whose certificate, client CAs and policy
// apply; the connection remembers the site for its requests.
func (s *Server) dispatchTLS() *tls.Config {
	return &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		st := s.siteNamed(chi.ServerName)
		if st == nil {
			st = s.sites[0]
		}
		if ac := auth.ConnOf(chi.Conn); ac != nil {
			st = ac.Memo(siteKey{}, func() any { return st }).(*site)
		}
		return st.tls.GetConfigForClient(chi)
	}}
}

// siteOf returns the site r's connection was handshaken for.
func (s *Server) siteOf(r *http.Request) *site {
	if c := ConnOf(r); c != nil {
		return c.Memo(siteKey{}, func() any { return s.sites[0] }).(*site)
	}
	return s.sites[0]
}

// serveSite serves r with its connection's site.
func (s *Server) serveSite(w http.ResponseWriter, r *http.Request) {
	s.siteOf(r).handler.ServeHTTP(w, r)
}

// misdirected answers 421 Misdirected Request (RFC 9110, Section 15.5.20)
// to a request whose Host names another site than st, the one its
// connection's handshake chose: a client reusing a connection for another
// name, whose certificate, client authentication and rules are not these.
// A Host that names no site is st's to serve.
func (s *Server) misdirected(st *site, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.misdirectedTo(st, r) {
			hd := w.Header()
			hd.Set("Content-Type", "text/plain; charset=utf-8")
			hd.Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusMisdirectedRequest)
			w.Write([]byte("misdirected request: this connection was opened for another site; open a new one for this host\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// misdirectedTo reports whether r, on a connection of site st, names
// another site's host.
func (s *Server) misdirectedTo(st *site, r *http.Request) bool {
	if len(s.sites) < 2 {
		return false
	}
	host := r.Host
	if hp, _, err := net.SplitHostPort(host); err == nil {
		host = hp
	}
	other := s.siteNamed(host)
	return other != nil && other != st
}

// siteHandler is what a site serves: h, with the server's own pages
// mounted at PagesPath (all of it without h) and the signature key
// directory, if any.
func (s *Server) siteHandler(a *auth.Authenticator, h http.Handler) http.Handler {
	switch {
	case h == nil:
		h = s.pagesFor(a, "/")
	case s.cfg.PagesPath != "":
		mux := http.NewServeMux()
		mux.Handle(s.cfg.PagesPath, s.pagesFor(a, s.cfg.PagesPath))
		mux.Handle("/", h)
		h = mux
	}
	if s.directory != nil {
		// A bot operator's site: its key directory, signed.
		mux := http.NewServeMux()
		mux.Handle(webbotauth.DirectoryPath, s.directory)
		mux.Handle("/", h)
		h = mux
	}
	return h
}

// certificates are every site's server certificate and the roots of its
// stores, by store, for the metrics (which report a root that sites share
// once).
func (s *Server) certificates() ([]*x509.Certificate, map[string][]*x509.Certificate) {
	var servers []*x509.Certificate
	roots := map[string][]*x509.Certificate{}
	for _, st := range s.sites {
		leaf, r := st.auth.Certificates()
		servers = append(servers, leaf)
		for store, rs := range r {
			roots[store] = append(roots[store], rs...)
		}
	}
	return servers, roots
}

// crls are every site's CRLs in force, for the metrics.
func (s *Server) crls() []auth.CRLInfo {
	var out []auth.CRLInfo
	for _, st := range s.sites {
		out = append(out, st.auth.CRLs()...)
	}
	return out
}
