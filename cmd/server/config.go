package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"time"

	"github.com/req-mtls/req-mtls/internal/config"
	"github.com/req-mtls/req-mtls/server"
)

// loadConfig reads and validates a -config file.
func loadConfig(name string) (*config.File, error) {
	f, err := config.Load(name)
	if err != nil {
		return nil, err
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// configReloader returns the function that reloads the -config file on a
// running server: a file that does not load or validate keeps the running
// configuration, and is logged with why; a good one puts its rules in
// force. Keys that only a restart applies (addresses, certificate paths,
// the origin) are logged when they changed.
func configReloader(name string, running config.Config, srv *server.Server, log *slog.Logger) func(trigger string) {
	return func(trigger string) {
		f, err := loadConfig(name)
		if err != nil {
			log.Error("configuration not reloaded: keeping the running one", "trigger", trigger, "file", name, "err", err)
			return
		}
		if err := srv.SetConfigRules(f.Config.Config); err != nil {
			log.Error("configuration not reloaded: keeping the running one", "trigger", trigger, "file", name, "err", err)
			return
		}
		next, was := f.Config, running
		next.Rules, was.Rules = nil, nil
		next.Sites, was.Sites = withoutRules(next.Sites), withoutRules(was.Sites)
		if changed := changedKeys(was, next); len(changed) > 0 {
			log.Warn("configuration reloaded, but these keys apply at the next start", "trigger", trigger, "file", name, "keys", changed)
		}
		rules := len(f.Rules)
		if len(f.Sites) > 0 {
			rules = 0
			for _, st := range f.SitesOf() {
				rules += len(st.Rules)
			}
		}
		log.Info("configuration reloaded", "trigger", trigger, "file", name, "rules", rules)
	}
}

// withoutRules is a copy of sites without their rules and handlers, for
// changedKeys: rules are reloaded, handlers are made from the other keys.
func withoutRules(sites []server.Site) []server.Site {
	out := make([]server.Site, len(sites))
	for i, st := range sites {
		st.Rules, st.Handler = nil, nil
		out[i] = st
	}
	return out
}

// changedKeys lists the keys whose values differ between a and b.
func changedKeys(a, b config.Config) []string {
	var out []string
	av, bv := a.Fields(), b.Fields()
	for i := range av {
		if !reflect.DeepEqual(av[i].Value, bv[i].Value) {
			out = append(out, av[i].Key)
		}
	}
	return out
}

// watchFile calls changed when the contents of the file called name
// change, comparing them every interval (which sees a file replaced by a
// rename or through a symlink as well as one written in place), until ctx
// ends.
func watchFile(ctx context.Context, name string, interval time.Duration, changed func()) {
	sum := func() []byte {
		data, err := os.ReadFile(name)
		if err != nil {
			return []byte(fmt.Sprint(err))
		}
		s := sha256.Sum256(data)
		return s[:]
	}
	last := sum()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if now := sum(); !bytes.Equal(now, last) {
				last = now
				changed()
			}
		}
	}
}
