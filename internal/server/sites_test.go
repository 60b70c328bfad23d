package server

import "testing"

// TestSiteNamed: exact names before wildcards, without regard to case or a
// final dot; a wildcard covers one label.
func TestSiteNamed(t *testing.T) {
	a := &site{hosts: []string{"a.example", "*.shop.example"}}
	b := &site{hosts: []string{"b.example", "www.shop.example"}}
	s := &Server{sites: []*site{a, b}}
	for _, tc := range []struct {
		name string
		want *site
	}{
		{"a.example", a}, {"A.Example", a}, {"a.example.", a}, {"b.example", b},
		{"x.shop.example", a}, {"www.shop.example", b}, {"shop.example", nil}, {"x.y.shop.example", nil},
		{".shop.example", nil}, {"c.example", nil}, {"", nil},
	} {
		if got := s.siteNamed(tc.name); got != tc.want {
			t.Errorf("siteNamed(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
