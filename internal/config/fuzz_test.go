package config

import (
	"strings"
	"testing"
)

// FuzzParse: any file parses or is refused with an error that names it,
// and what parses validates without a panic, each problem naming the file.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"cert: a.crt\nkey: a.key\n",
		"listen_addr: 127.0.0.1:0\nclient_auth: verify\nclient_cacert: ca.crt\n",
		"rules:\n  - name: r\n    action: limit\n    rate: 10/s\n    burst: 5\n",
		"sites:\n  - hosts: [a.example]\n    cert: a.crt\n    key: a.key\n    rules:\n      - name: x\n        match: {path: /, store: agent}\n        action: deny\n",
		"max_hello_memory: 32MiB\nproxy_protocol_from: [127.0.0.0/8]\nsignature_skew: 1m\n",
		"cert: [\n",
		"unknown_key: 1\n",
		"rules:\n  - name: r\n    action: require\n    what: both\n    match: {identity_match: true}\n",
		"redis: redis://127.0.0.1:6379/0\nredis_timeout: 50ms\ndeny: deny.txt\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("%q: the error does not name the file: %v", data, err)
			}
			return
		}
		if err := file.Validate(); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.yaml") {
					t.Fatalf("%q: a problem does not name the file: %q", data, line)
				}
			}
		}
	})
}
