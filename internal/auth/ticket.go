package auth

import (
	"bytes"
)

// storeRef names a trust store by kind and contents (store.digest).
type storeRef struct {
	kind   StoreKind
	digest [32]byte
}

// sessionTag is what the server adds to each session ticket it issues
// (tls.SessionState.Extra), so that a later ClientHello's ticket can be
// judged by acceptTicket.
type sessionTag struct {
	hasCert bool     // the session carries a client certificate
	store   storeRef // the store the session's certificate was checked against
}

// sessionTagPrefix starts the tag; the version digit changes with the layout.
const sessionTagPrefix = "req-mtls/2"

// marshal lays the tag out as the prefix, a has-certificate byte, the store
// kind byte and the 32-byte store digest.
func (t sessionTag) marshal() []byte {
	b := append([]byte(sessionTagPrefix), 0, byte(t.store.kind))
	if t.hasCert {
		b[len(sessionTagPrefix)] = 1
	}
	return append(b, t.store.digest[:]...)
}

// parseSessionTag finds the tag among a ticket's Extra entries. A ticket
// without one (issued by another program, or by an older layout) is not ok.
func parseSessionTag(extra [][]byte) (t sessionTag, ok bool) {
	for _, e := range extra {
		rest, found := bytes.CutPrefix(e, []byte(sessionTagPrefix))
		if !found || len(rest) != 2+32 || rest[0] > 1 || StoreKind(rest[1]) > StoreBot {
			continue
		}
		t.hasCert = rest[0] == 1
		t.store.kind = StoreKind(rest[1])
		copy(t.store.digest[:], rest[2:])
		return t, true
	}
	return sessionTag{}, false
}

// acceptTicket decides whether a ClientHello may resume the session a ticket
// describes, on a connection that sets flag 80 (flagged) or not, whose
// certificates would be checked against want. Each rule guards against one
// way of ending up with the wrong identity:
//
//   - An untagged ticket: nothing says what the session proved, so no
//     resumption is safe.
//   - A flagged client resuming a session without a certificate: a resumed
//     session keeps the identity of the one it resumes, and a server sends
//     no CertificateRequest with a PSK (RFC 8446, Sections 2.2 and 4.3.2),
//     so the client would be unauthenticated while asking to be asked.
//     Declining gives it a full handshake with a CertificateRequest.
//   - A certificate accepted under another store than the one that applies
//     now: a bot certificate resuming on an unflagged connection (checked
//     against the client CAs), or the reverse. Without this the handshake
//     would check it against the wrong store and fail with bad_certificate
//     on every retry, since the client keeps its ticket.
//   - A certificate accepted under other contents of the same store (a
//     root added or removed since): the certificate is checked again in a
//     full handshake instead.
//
// Digest comparison, not a process-local counter, makes instances that load
// the same files agree, so tickets shared between them resume.
func acceptTicket(t sessionTag, ok, flagged bool, want storeRef) bool {
	switch {
	case !ok:
		return false
	case flagged && !t.hasCert:
		return false
	case t.hasCert && t.store != want:
		return false
	}
	return true
}
