//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package gateway

// alive cannot peek at the socket here: a connection the origin closed
// while idle is found when the request fails, and an idempotent request is
// sent again.
func (pc *pconn) alive() bool { return pc.br.Buffered() == 0 }
