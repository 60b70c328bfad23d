//go:build race

package e2e

// Under the race detector (make race), the binaries are built with it too.
func init() { buildFlags = append(buildFlags, "-race") }
