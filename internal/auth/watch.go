package auth

import (
	"context"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce is how long the watcher waits after the last event before it
// compares the files: tools write a certificate and its key as separate
// files, editors write in several steps, and the kubelet makes a directory,
// a symlink and a rename for one update.
const debounce = 250 * time.Millisecond

// maxDelay bounds how long a burst of events can put a reload off.
const maxDelay = time.Second

// Watch reloads the parts whose files changed, until ctx ends. Any event in
// a watched directory (the files' own, and the ones their symlinks resolve
// to) starts a comparison of what each file resolves to now with what was
// loaded; the comparison also runs every Config.RecheckInterval, in case
// an event never comes. Only parts whose files changed are loaded. A
// directory that disappears is watched again once it is back.
func (a *Authenticator) Watch(ctx context.Context) error {
	defer a.watchOnce.Do(func() { close(a.watching) }) // no waiting on a Watch that failed
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()

	// Every part's files, as the reload knows them: one list, so that a
	// new part is watched as soon as it is one.
	var files []string
	for _, p := range a.parts() {
		for _, f := range p.files {
			abs, err := filepath.Abs(f)
			if err != nil {
				return err
			}
			files = append(files, abs)
		}
	}
	// dirs lists the directories to watch now: each file's own, and the
	// one it resolves to through symlinks (which moves as they change).
	dirs := func() []string {
		var ds []string
		for _, f := range files {
			ds = append(ds, filepath.Dir(f))
			if r, err := filepath.EvalSymlinks(f); err == nil {
				ds = append(ds, filepath.Dir(r))
			}
		}
		slices.Sort(ds)
		return slices.Compact(ds)
	}
	// addMissing watches every directory not yet watched; it reports
	// whether one came (back).
	addMissing := func() bool {
		added := false
		watched := w.WatchList()
		for _, d := range dirs() {
			if slices.Contains(watched, d) {
				continue
			}
			if err := w.Add(d); err == nil {
				added = true
			}
		}
		return added
	}
	addMissing()
	a.watchOnce.Do(func() { close(a.watching) })

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pending, burstEnd := false, time.Time{}
	recheck := time.NewTicker(time.Second)
	defer recheck.Stop()
	backstop := time.NewTicker(a.cfg.RecheckInterval)
	defer backstop.Stop()
	// When a CRL in force reaches its nextUpdate, the certificates of its
	// issuer stop validating: open connections are checked again then,
	// as after a reload.
	crlDue := time.NewTimer(time.Hour)
	crlDue.Stop()
	armCRL := func() {
		if next, ok := a.state.Load().crls.earliestNext(); ok {
			crlDue.Reset(max(next.Sub(a.cfg.Now()), 0) + 100*time.Millisecond)
		}
	}
	armCRL()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			// Wait for the burst to end, but never more than
			// maxDelay after its first event: a directory written
			// to all the time must not hold a reload back.
			now := time.Now()
			if !pending {
				pending, burstEnd = true, now.Add(maxDelay)
			}
			timer.Reset(min(debounce, max(burstEnd.Sub(now), 0)))
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			a.log.Warn("file watch error", "err", err)
		case <-recheck.C:
			if addMissing() {
				a.log.Info("watching certificate directory again")
				timer.Reset(debounce)
			}
		case <-timer.C:
			pending = false
			a.reload("file change", false)
			addMissing() // a symlink may now resolve elsewhere
			armCRL()
		case <-backstop.C:
			a.reload("recheck", false)
			armCRL()
		case <-a.reloaded:
			armCRL() // a reload by hand (SIGHUP) may have brought new CRLs
		case <-crlDue.C:
			a.recheck(a.state.Load())
		}
	}
}

// Watching returns a channel closed once Watch has its watches in place
// (or has failed): from then on, a change of a file is seen.
func (a *Authenticator) Watching() <-chan struct{} { return a.watching }
