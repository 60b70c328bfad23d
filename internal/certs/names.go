package certs

import (
	"fmt"
	"net"
	"strings"
)

// CheckDNSName reports whether name is a DNS host name fit for a
// certificate's dNSName: dot-separated labels of letters, digits and
// hyphens, none empty or longer than 63 bytes, none starting or ending with a
// hyphen, at most 253 bytes in all (RFC 1034, Section 3.5, as RFC 1123,
// Section 2.1 relaxed it; RFC 5280, Section 4.2.1.6 takes that syntax). An
// IP address is refused: it is not a DNS name, and a client certificate
// names its holder by a domain it controls.
func CheckDNSName(name string) error {
	if name == "" {
		return fmt.Errorf("empty DNS name")
	}
	if net.ParseIP(name) != nil {
		return fmt.Errorf("%q is an IP address, not a DNS name", name)
	}
	if len(name) > 253 {
		return fmt.Errorf("%q is not a DNS name: longer than 253 characters", name)
	}
	for _, label := range strings.Split(name, ".") {
		if err := checkLabel(label); err != nil {
			return fmt.Errorf("%q is not a DNS name: %s (letters, digits and hyphens in dot-separated labels, like bot.example.com)", name, err)
		}
	}
	return nil
}

func checkLabel(label string) error {
	switch {
	case label == "":
		return fmt.Errorf("empty label")
	case len(label) > 63:
		return fmt.Errorf("label %q is longer than 63 characters", label)
	case label[0] == '-' || label[len(label)-1] == '-':
		return fmt.Errorf("label %q starts or ends with a hyphen", label)
	}
	for _, c := range label {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-':
		case c > 0x7f:
			return fmt.Errorf("%q is not ASCII (write an internationalised name in its xn-- form)", c)
		default:
			return fmt.Errorf("%q is not allowed", c)
		}
	}
	return nil
}

// CheckHost reports whether h is fit for a server certificate's names: an
// IP address, a DNS name, or a wildcard "*." followed by a DNS name.
func CheckHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	return CheckDNSName(strings.TrimPrefix(h, "*."))
}
