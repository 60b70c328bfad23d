package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/req-mtls/req-mtls/internal/certs"
)

// Files names the PEM files the server loads, and reloads when they change.
type Files struct {
	Cert, Key string // server certificate chain and its private key
	ClientCA  string // roots for client certificates (-client-cacert)
	BotCA     string // optional roots for flagged clients only (-bot-cacert)
}

// state is one loaded, validated set of files and the TLS configs built on
// it. It is never modified once published.
type state struct {
	gen       uint64 // counts successful loads; tags session tickets
	cert      *tls.Certificate
	clientCAs *x509.CertPool // nil without -client-cacert
	botCAs    *x509.CertPool // nil without -bot-cacert
	configs   [2]*tls.Config // indexed by whether the client set flag 80
}

// roots returns the trust store for a client: flagged clients are checked
// against the bot store when there is one, and never against both.
func (st *state) roots(flagged bool) *x509.CertPool {
	if flagged && st.botCAs != nil {
		return st.botCAs
	}
	return st.clientCAs
}

var generation atomic.Uint64

// loadState reads and checks every file; nothing is returned unless all of
// them are good.
func loadState(f Files) (*state, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("a server certificate and key are required")
	}
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("load server certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("load server key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load server certificate %q and key %q: %w", f.Cert, f.Key, err)
	}
	st := &state{cert: &cert}
	if f.ClientCA != "" {
		if st.clientCAs, err = certs.LoadPool(f.ClientCA); err != nil {
			return nil, err
		}
	}
	if f.BotCA != "" {
		if st.botCAs, err = certs.LoadPool(f.BotCA); err != nil {
			return nil, err
		}
	}
	st.gen = generation.Add(1)
	return st, nil
}

// Session tickets carry a tag: whether the session had a client certificate,
// and the generation of the state that accepted it. See Server.buildConfigs.
const ticketTagPrefix = "req-mtls/1"

func ticketTag(hasCert bool, gen uint64) []byte {
	b := append([]byte(ticketTagPrefix), 0)
	if hasCert {
		b[len(b)-1] = 1
	}
	return binary.BigEndian.AppendUint64(b, gen)
}

func parseTicketTag(extra [][]byte) (hasCert bool, gen uint64, ok bool) {
	for _, e := range extra {
		rest, found := bytes.CutPrefix(e, []byte(ticketTagPrefix))
		if found && len(rest) == 9 {
			return rest[0] == 1, binary.BigEndian.Uint64(rest[1:]), true
		}
	}
	return false, 0, false
}
