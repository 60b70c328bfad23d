package server

import (
	"context"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce is how long the watcher waits after the last change before it
// reloads: tools write a certificate and its key as separate files, and
// editors write in several steps.
const debounce = 250 * time.Millisecond

// Watch reloads the certificates when any of the files changes, until ctx
// ends. It watches the files' directories, not the files, since tools
// replace files by renaming new ones over them. A directory that disappears
// is watched again once it is back.
func (s *Server) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()

	names := map[string]bool{}
	var dirs []string
	for _, f := range []string{s.cfg.Files.Cert, s.cfg.Files.Key, s.cfg.Files.ClientCA, s.cfg.Files.BotCA} {
		if f == "" {
			continue
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			return err
		}
		names[abs] = true
		if d := filepath.Dir(abs); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	// addMissing watches every directory not yet watched; it reports
	// whether one came (back).
	addMissing := func() bool {
		added := false
		watched := w.WatchList()
		for _, d := range dirs {
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

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	recheck := time.NewTicker(time.Second)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if names[filepath.Clean(ev.Name)] {
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.log.Warn("file watch error", "err", err)
		case <-recheck.C:
			if addMissing() {
				s.log.Info("watching certificate directory again")
				timer.Reset(debounce)
			}
		case <-timer.C:
			s.Reload("file change")
		}
	}
}
