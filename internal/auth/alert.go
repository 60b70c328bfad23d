package auth

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"io"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/hkdf"
)

// crypto/tls answers every error from VerifyConnection with a
// bad_certificate alert. A revoked certificate deserves certificate_revoked
// (RFC 8446, Section 6.2), which tells the bot's operator what happened, so
// the connection rewrites that one alert record on its way out: in the
// clear where crypto/tls sends it before encryption starts (TLS 1.2, or a
// resumption refused before ServerHello), and otherwise sealed again under
// the server's traffic key, which crypto/tls hands to the connection's key
// log (RFC 8446, Section 7.3: key and iv from the traffic secret). Nothing
// else is ever changed.

const (
	alertBadCertificate     = 42
	alertCertificateRevoked = 44
	recordTypeAlert         = 21
	recordTypeAppData       = 23
)

// alertRewriter holds what a connection needs to rewrite its one alert.
type alertRewriter struct {
	mu     sync.Mutex
	want   byte   // the alert to send instead of bad_certificate; 0 for none
	secret []byte // SERVER_TRAFFIC_SECRET_0, from the key log
	next   io.Writer
}

// Write takes key log lines (NSS format): the server's application traffic
// secret is kept; every line goes on to next, the base config's key log.
func (r *alertRewriter) Write(line []byte) (int, error) {
	if label, rest, ok := bytes.Cut(line, []byte(" ")); ok && string(label) == "SERVER_TRAFFIC_SECRET_0" {
		if _, sec, ok := bytes.Cut(rest, []byte(" ")); ok {
			if b, err := hex.DecodeString(string(bytes.TrimSpace(sec))); err == nil {
				r.mu.Lock()
				r.secret = b
				r.mu.Unlock()
			}
		}
	}
	if r.next != nil {
		return r.next.Write(line)
	}
	return len(line), nil
}

// rewrite returns rec, or the record that sends r.want in its place when
// rec is the bad_certificate alert.
func (r *alertRewriter) rewrite(rec []byte) []byte {
	r.mu.Lock()
	want, secret := r.want, r.secret
	r.mu.Unlock()
	if want == 0 || len(rec) < 5 {
		return rec
	}
	switch {
	case rec[0] == recordTypeAlert && len(rec) == 7 && rec[6] == alertBadCertificate:
		out := bytes.Clone(rec)
		out[6] = want
		return out
	case rec[0] == recordTypeAppData && secret != nil:
		return resealAlert(rec, secret, want)
	}
	return rec
}

// resealAlert opens rec, a TLS 1.3 record under the traffic secret, and
// when it holds the fatal bad_certificate alert seals want in its place
// with the same sequence number. It tries the first few sequence numbers
// and each AEAD the secret's length allows.
func resealAlert(rec, secret []byte, want byte) []byte {
	for _, aead := range tls13AEADs(secret) {
		for seq := uint64(0); seq < 8; seq++ {
			nonce := aead.nonce(seq)
			plain, err := aead.Open(nil, nonce, rec[5:], rec[:5])
			if err != nil {
				continue
			}
			// TLSInnerPlaintext: content, then the content type.
			if !bytes.Equal(plain, []byte{2, alertBadCertificate, recordTypeAlert}) {
				return rec
			}
			return aead.Seal(bytes.Clone(rec[:5]), nonce, []byte{2, want, recordTypeAlert}, rec[:5])
		}
	}
	return rec
}

type trafficAEAD struct {
	cipher.AEAD
	iv []byte
}

func (a trafficAEAD) nonce(seq uint64) []byte {
	n := bytes.Clone(a.iv)
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	for i := range s {
		n[len(n)-8+i] ^= s[i]
	}
	return n
}

// tls13AEADs derives the AEADs a traffic secret may key: TLS 1.3's three
// suites, by the hash the secret's length tells.
func tls13AEADs(secret []byte) []trafficAEAD {
	var out []trafficAEAD
	add := func(h func() hash.Hash, keyLen int, mk func([]byte) (cipher.AEAD, error)) {
		key := expandLabel(h, secret, "key", keyLen)
		iv := expandLabel(h, secret, "iv", 12)
		if a, err := mk(key); err == nil {
			out = append(out, trafficAEAD{a, iv})
		}
	}
	gcm := func(key []byte) (cipher.AEAD, error) {
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	}
	switch len(secret) {
	case sha256.Size:
		add(sha256.New, 16, gcm)
		add(sha256.New, 32, chacha20poly1305.New)
	case sha512.Size384:
		add(sha512.New384, 32, gcm)
	}
	return out
}

// expandLabel is HKDF-Expand-Label (RFC 8446, Section 7.1) with an empty
// context.
func expandLabel(h func() hash.Hash, secret []byte, label string, n int) []byte {
	var b cryptobyte.Builder
	b.AddUint16(uint16(n))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("tls13 " + label)) })
	b.AddUint8LengthPrefixed(func(*cryptobyte.Builder) {})
	out := make([]byte, n)
	io.ReadFull(hkdf.Expand(h, secret, b.BytesOrPanic()), out)
	return out
}
