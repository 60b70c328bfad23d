package forward

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Destinations is where clients that reach the proxy on a non-loopback
// address may not go: loopback, link-local and unspecified addresses, and
// the proxy host's own addresses (its interfaces', and the one the client
// reached it on), unless Allow opens them. Such a client could otherwise
// reach the services that listen on the proxy's host for it alone (a
// profiler, an admin port, a cloud's metadata service at 169.254.169.254)
// and tell open ports from closed ones by the proxy's answers. A client
// that reaches the proxy on loopback is on its host already, and may go
// anywhere. The zero value refuses them all.
//
// The check is made on the address connected to, after the name is
// resolved (the dial's ControlContext), so a name that resolves to a
// refused address is refused as well, whenever it does.
type Destinations struct {
	// Allow lists prefixes opened all the same (127.0.0.0/8 to reach the
	// host's own services).
	Allow []netip.Prefix

	mu      sync.Mutex
	own     []netip.Addr
	ownTime time.Time
}

// ownTTL is how long the list of the host's addresses is kept.
const ownTTL = 10 * time.Second

// DestinationError says a destination was refused, and why.
type DestinationError struct {
	Addr netip.Addr
	Why  string // "a loopback address", ...
}

func (e *DestinationError) Error() string {
	return fmt.Sprintf("destination %s is %s: refused to clients that reach the proxy from the network (the proxy's -allow-destinations, or AllowDestinations, opens it)", e.Addr, e.Why)
}

// Far reports whether the request came in on a non-loopback address, so
// that the rule applies to it.
func Far(ctx context.Context) bool {
	la, ok := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return true // unknown: the safer guess
	}
	ap, err := netip.ParseAddrPort(la.String())
	return err != nil || !ap.Addr().Unmap().IsLoopback()
}

// Check returns a *DestinationError when ip is refused to a client whose
// request carries ctx (its local address is the proxy's own), nil when
// it is allowed.
func (d *Destinations) Check(ctx context.Context, ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	for _, p := range d.Allow {
		if p.Contains(ip) {
			return nil
		}
	}
	var why string
	switch {
	case ip.IsLoopback():
		why = "a loopback address"
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast():
		why = "a link-local address"
	case ip.IsUnspecified() || ip.Is4() && ip.As4()[0] == 0:
		why = "an unspecified address" // 0.0.0.0/8 and ::, which reach the host itself
	case d.isOwn(ctx, ip):
		why = "the proxy's own address"
	default:
		return nil
	}
	return &DestinationError{Addr: ip, Why: why}
}

// CheckHost checks host when it is an IP address; names are checked when
// they are resolved, by Control.
func (d *Destinations) CheckHost(ctx context.Context, host string) error {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	return d.Check(ctx, ip)
}

// Control is a net.Dialer's ControlContext that refuses what Check
// refuses, the address being the one about to be connected to.
func (d *Destinations) Control(ctx context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("destination %q: not an address and port: %w", address, err)
	}
	return d.Check(ctx, ap.Addr())
}

// isOwn reports whether ip is one of the host's interface addresses, or
// the one the request came in on.
func (d *Destinations) isOwn(ctx context.Context, ip netip.Addr) bool {
	if la, ok := ctx.Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil && ap.Addr().Unmap().WithZone("") == ip {
			return true
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if time.Since(d.ownTime) > ownTTL {
		d.own = d.own[:0]
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				d.own = append(d.own, p.Addr().Unmap().WithZone(""))
			}
		}
		d.ownTime = time.Now()
	}
	for _, a := range d.own {
		if a == ip {
			return true
		}
	}
	return false
}
