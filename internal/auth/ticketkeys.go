package auth

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
)

// maxTicketKeys bounds a ticket keys file: rotation needs two or three.
const maxTicketKeys = 16

// LoadTicketKeys reads a session ticket keys file (ParseTicketKeys).
func LoadTicketKeys(name string) ([][32]byte, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("load session ticket keys: %w", err)
	}
	keys, err := ParseTicketKeys(data)
	if err != nil {
		return nil, fmt.Errorf("load session ticket keys %q: %w", name, err)
	}
	return keys, nil
}

// ParseTicketKeys parses session ticket keys: one key a line, 32 random
// bytes in standard base64 (what `openssl rand -base64 32` prints), blank
// lines and lines starting with # ignored. The first key encrypts new
// tickets; all of them decrypt. Rotation: add the new key second, reload
// every instance, move it first, reload, later drop the old one.
func ParseTicketKeys(data []byte) ([][32]byte, error) {
	var keys [][32]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		raw, err := base64.StdEncoding.Strict().DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: not standard base64 (want 32 random bytes, as `openssl rand -base64 32` prints)", n)
		}
		if len(raw) != 32 {
			return nil, fmt.Errorf("line %d: a key is 32 bytes, this one %d", n, len(raw))
		}
		if len(keys) == maxTicketKeys {
			return nil, fmt.Errorf("line %d: more than %d keys", n, maxTicketKeys)
		}
		keys = append(keys, [32]byte(raw))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no keys (want one or more lines of 32 bytes in base64)")
	}
	return keys, nil
}
