package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// TestWatchTicketKeys: the ticket-keys file is watched like the
// certificates, in its own directory, so that the two steps of a rotation
// are each taken within a second, not at the next backstop.
func TestWatchTicketKeys(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "ticket.keys")
	key := func(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) + "\n" }
	if err := os.WriteFile(keys, []byte(key(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded := make(chan string, 10)
	a, err := New(Config{TicketKeysFile: keys, RecheckInterval: time.Hour,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnReload: func(part string, err error) { reloaded <- fmt.Sprint(part, " ", err) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Watch(ctx)
	time.Sleep(200 * time.Millisecond) // the watcher starts
	if err := os.WriteFile(keys+".tmp", []byte(key(2)+key(1)), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Rename(keys+".tmp", keys)
	select {
	case got := <-reloaded:
		if got != "session ticket keys <nil>" {
			t.Fatalf("reloaded %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the ticket-keys file changed and nothing reloaded it within 5 s")
	}
}

// TestWatchingArmed: once Watching is closed, a change made at once is
// seen, with no wait for the backstop.
func TestWatchingArmed(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "ticket.keys")
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)) + "\n"
	os.WriteFile(keys, []byte(key), 0o600)
	reloaded := make(chan struct{}, 10)
	a, err := New(Config{TicketKeysFile: keys, RecheckInterval: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnReload: func(string, error) { reloaded <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Watch(ctx)
	<-a.Watching()
	os.WriteFile(keys, []byte(key+key), 0o600)
	select {
	case <-reloaded:
	case <-time.After(5 * time.Second):
		t.Fatal("a change made once Watching was closed was not seen within 5 s")
	}
}
