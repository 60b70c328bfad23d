package auth

import (
	"strings"
	"testing"
)

func TestParseTicketKeys(t *testing.T) {
	k1 := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" // bytes 0..31
	k2 := "//////////////////////////////////////////8="
	keys, err := ParseTicketKeys([]byte("# fleet keys\n\n" + k1 + "\n  " + k2 + "  \n"))
	if err != nil || len(keys) != 2 || keys[0][31] != 31 || keys[1][0] != 0xff {
		t.Fatalf("keys %v, %v", keys, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"", "no keys"},
		{"# only a comment\n", "no keys"},
		{"not base64!\n", "line 1: not standard base64"},
		{"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\n", "line 1: a key is 32 bytes, this one 31"},
		{k1 + "\nAAEC AwQF\n", "line 2: not standard base64"},
		{strings.Repeat(k1+"\n", 17), "line 17: more than 16 keys"},
	} {
		if _, err := ParseTicketKeys([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
}

func FuzzParseTicketKeys(f *testing.F) {
	f.Add([]byte("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"))
	f.Add([]byte("# c\n\n//////////////////////////////////////////8=\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseTicketKeys(data)
		if err == nil && (len(keys) == 0 || len(keys) > maxTicketKeys) {
			t.Fatalf("%d keys accepted", len(keys))
		}
	})
}
