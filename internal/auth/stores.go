package auth

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/req-mtls/req-mtls/internal/certs"
	"github.com/req-mtls/req-mtls/internal/deny"
)

// StoreKind names the trust store that a client certificate is checked
// against.
type StoreKind uint8

const (
	StoreNone   StoreKind = iota // no store applies (none configured)
	StoreClient                  // -client-cacert
	StoreBot                     // -bot-cacert, for flagged clients only
	// StoreAgent is a certificate vouched for by a trusted agent's key
	// directory: its subjectAltName URI is the agent's URL and its public
	// key is in the agent's directory, whoever issued it.
	StoreAgent
)

func (k StoreKind) String() string {
	switch k {
	case StoreClient:
		return "client"
	case StoreBot:
		return "bot"
	case StoreAgent:
		return "agent"
	}
	return "none"
}

// store is one loaded trust store for client certificates.
type store struct {
	kind  StoreKind
	pool  *x509.CertPool
	certs []*x509.Certificate
	// digest identifies the store's contents: the SHA-256 over its roots'
	// DER in sorted order. Instances that load the same roots agree on it,
	// whatever the file's order or PEM formatting; any change of roots
	// changes it.
	digest [32]byte
}

func loadStore(kind StoreKind, file string) (*store, error) {
	roots, err := certs.LoadCARoots(file)
	if err != nil {
		return nil, err
	}
	ders := make([][]byte, len(roots))
	for i, c := range roots {
		ders[i] = c.Raw
	}
	slices.SortFunc(ders, func(a, b []byte) int { return slices.Compare(a, b) })
	h := sha256.New()
	for _, d := range ders {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(d))))
		h.Write(d)
	}
	st := &store{kind: kind, pool: certs.Pool(roots), certs: roots}
	h.Sum(st.digest[:0])
	return st, nil
}

// ref returns what a session ticket records of the store: its kind and
// contents. A nil store is StoreNone.
func (s *store) ref() storeRef {
	if s == nil {
		return storeRef{}
	}
	return storeRef{kind: s.kind, digest: s.digest}
}

// roots returns the pool, or nil for no store.
func (s *store) roots() *x509.CertPool {
	if s == nil {
		return nil
	}
	return s.pool
}

func loadServerCert(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load server certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load server key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load server certificate %q and key %q: %w", certFile, keyFile, err)
	}
	return &cert, nil
}

// state is one consistent set of loaded parts. It is never modified once
// published.
type state struct {
	gen    uint64           // counts published states, for the log
	cert   *tls.Certificate // nil without Config.CertFile
	client *store           // nil without Config.ClientCAFile
	bot    *store           // nil without Config.BotCAFile
	// ticketKeys owns the shared session ticket keys (SetSessionTicketKeys);
	// nil without Config.TicketKeysFile.
	ticketKeys *tls.Config
	crls       *crlSet    // nil without Config.ClientCRLFile
	deny       *deny.List // nil without Config.DenyFile
}

// storeFor returns the trust store for a client: flagged clients are
// checked against the bot store when there is one, and never against both.
func (st *state) storeFor(flagged bool) *store {
	if flagged && st.bot != nil {
		return st.bot
	}
	return st.client
}

// A part is one of the things the server loads from files, reloaded on its
// own: a broken file in one part never holds back a change to another, and
// each part keeps its last good state.
type part struct {
	name  string // in logs: "server certificate", "client CA bundle", "bot CA bundle"
	files []string
	load  func(next *state) error
	// store marks the trust-store parts; afterStores, a part loaded
	// again whenever one of them is, since it is checked against them.
	store, afterStores bool
}

func (a *Authenticator) parts() []part {
	c := a.cfg
	var ps []part
	if c.CertFile != "" {
		ps = append(ps, part{name: "server certificate", files: []string{c.CertFile, c.KeyFile}, load: func(next *state) error {
			cert, err := loadServerCert(c.CertFile, c.KeyFile)
			if err == nil {
				next.cert = cert
			}
			return err
		}})
	}
	// storePart loads a CA bundle into the state's slot for its kind.
	storePart := func(name string, kind StoreKind, file string, slot func(*state) **store) part {
		return part{name: name, files: []string{file}, store: true, load: func(next *state) error {
			st, err := loadStore(kind, file)
			if err == nil {
				*slot(next) = st
			}
			return err
		}}
	}
	if c.TicketKeysFile != "" {
		ps = append(ps, part{name: "session ticket keys", files: []string{c.TicketKeysFile}, load: func(next *state) error {
			keys, err := LoadTicketKeys(c.TicketKeysFile)
			if err == nil {
				holder := &tls.Config{}
				holder.SetSessionTicketKeys(keys)
				next.ticketKeys = holder
			}
			return err
		}})
	}
	if c.ClientCAFile != "" {
		ps = append(ps, storePart("client CA bundle", StoreClient, c.ClientCAFile, func(s *state) **store { return &s.client }))
	}
	if c.BotCAFile != "" {
		ps = append(ps, storePart("bot CA bundle", StoreBot, c.BotCAFile, func(s *state) **store { return &s.bot }))
	}
	if c.ClientCRLFile != "" {
		// After the stores: each CRL is checked against the roots that
		// the state being built holds.
		ps = append(ps, part{name: "client CRL", files: []string{c.ClientCRLFile}, afterStores: true, load: func(next *state) error {
			set, err := loadCRLs(c.ClientCRLFile, next.client, next.bot)
			if err == nil {
				next.crls = set
				for _, i := range set.info() {
					a.log.Info("client CRL loaded", "issuer", i.Issuer, "revoked", i.Revoked, "next_update", i.NextUpdate.UTC().Format(time.RFC3339))
				}
			}
			return err
		}})
	}
	if c.DenyFile != "" {
		ps = append(ps, part{name: "deny list", files: []string{c.DenyFile}, load: func(next *state) error {
			l, err := deny.Load(c.DenyFile)
			if err == nil {
				next.deny = l
			}
			return err
		}})
	}
	return ps
}

// stamp identifies what files resolve to now: their contents, read through
// any symlinks, or the error reading them. Content, not a modification time
// or an event's file name, is what tells a change, so that Kubernetes
// volumes (where a "..data" symlink is swapped and no event names the file)
// and writes within one timestamp tick are both seen.
func stamp(files []string) [32]byte {
	h := sha256.New()
	for _, f := range files {
		h.Write([]byte(f))
		h.Write([]byte{0})
		data, err := os.ReadFile(f)
		if err != nil {
			h.Write([]byte("error: " + err.Error()))
		} else {
			h.Write(data)
		}
		h.Write([]byte{0})
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}
