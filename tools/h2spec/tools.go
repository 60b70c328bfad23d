//go:build tools

// Package tools pins h2spec (github.com/summerwind/h2spec), the HTTP/2
// conformance suite the end-to-end tests run, and its dependencies, in a
// module of its own: nothing of it reaches the project's go.mod. make
// h2spec builds bin/h2spec from here.
package tools

import _ "github.com/summerwind/h2spec/cmd/h2spec"
