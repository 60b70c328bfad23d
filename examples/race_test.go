//go:build race

package examples

// Under go test -race the example programs are built with the race
// detector too: a race in them makes them exit non-zero, which the test
// reports.
func init() { buildFlags = append(buildFlags, "-race") }
