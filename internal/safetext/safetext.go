// Package safetext makes names that come from certificates safe to print
// and log. A certificate's names are chosen by whoever made it: a DNS name
// may hold a newline (which forges a line of a text report or a log), an
// ANSI escape, or a right-to-left override. Escape turns every such
// character into a visible escape sequence.
package safetext

import (
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Escape returns s unchanged when every rune in it is printable (by
// unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the
// ASCII space) and it holds no backslash; otherwise it returns s in Go
// string-literal escaping without the surrounding quotes, so that control
// characters, invalid UTF-8 and invisible format characters read as \n,
// \x1b, \u202e and the like. A backslash is escaped too, so that an escape
// sequence in the output always stands for one in the input.
func Escape(s string) string {
	if isSafe(s) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func isSafe(s string) bool {
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			// ASCII: the printable characters but the backslash and
			// the quote (unicode.IsPrint, without decoding).
			if c < 0x20 || c == 0x7f || c == '\\' || c == '"' {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 || r == '\\' || r == '"' || !unicode.IsPrint(r) {
			return false
		}
		i += size
	}
	return true
}

// EscapeAll applies Escape to each string of names, in a new slice.
func EscapeAll(names []string) []string {
	if names == nil {
		return nil
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = Escape(n)
	}
	return out
}
