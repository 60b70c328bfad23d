// Package version says which build of a command is running, from the
// information the go command records in every binary
// (runtime/debug.ReadBuildInfo): the module version, the VCS revision and
// whether the tree had uncommitted changes.
package version

import (
	"runtime/debug"
	"strings"
)

// String returns a one-line version for the command name, as -version
// prints it:
//
//	client v1.2.0 go1.26.0
//	client (devel) revision 1c07dae2b1c3 (modified) go1.26.0
//
//	client v0.0.0-20251122164103-1c07dae2b1c3+dirty go1.26.0
//
// A binary from `go install ...@version` carries the module version and no
// revision; one built in a clone carries the revision, which from Go 1.24 on
// is also in its pseudo-version (with +dirty for uncommitted changes), and
// (devel) with -buildvcs=false.
func String(name string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return name + " (unknown version: built without module support)"
	}
	return format(name, bi)
}

func format(name string, bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var b strings.Builder
	b.WriteString(name + " " + v)
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	// From Go 1.24 on, a build in a clone has a pseudo-version that holds
	// the revision already (and "+dirty" for modified).
	if rev != "" && !strings.Contains(v, rev) {
		b.WriteString(" revision " + rev)
		if modified {
			b.WriteString(" (modified)")
		}
	}
	if bi.GoVersion != "" {
		b.WriteString(" " + bi.GoVersion)
	}
	return b.String()
}
