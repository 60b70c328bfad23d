package main

import (
	"fmt"
	"html"
	"strings"
)

type bar struct {
	group, label string
	value        float64
}

// chart is what tells one chart from the other.
type chart struct {
	title  string
	colors map[string]string // by bar label
	unit   string            // after each value; µs when empty
	// perGroup scales each group's bars to its own largest (groups of
	// different sizes: a p99 under load and a p50 one at a time).
	perGroup bool
}

var handshakeChart = chart{
	title: "Server CPU per full TLS 1.3 handshake (µs, lower is better)",
	colors: map[string]string{
		"ours, flag 80 + certificate": "#1f5fa8",
		"stock, always requests":      "#7fb2ee",
		"ours, no flag":               "#2e7d32",
		"stock, never requests":       "#8fd694",
	},
}

var loadChart = chart{
	title: "TLS terminators at saturation, per core of the terminator (higher is better)",
	colors: map[string]string{
		"ours":       "#1f5fa8",
		oursLogged:   "#5b8fd0",
		oursBaseline: "#9db9dc",
		oursRules:    "#3f6fb0",
		oursAgent:    "#7ea6d8",
		oursRedis:    "#6a4c9c",
		"Caddy":      "#2e7d32",
		"nginx":      "#c0392b",
	},
	unit: "/s",
}

var latencyChart = chart{
	title:    "TLS terminators: latency (µs, lower is better; each group to its own scale)",
	colors:   loadChart.colors,
	perGroup: true,
}

var gatewayChart = chart{
	title: "TLS terminator CPU per proxied request (µs, lower is better)",
	colors: map[string]string{
		"ours":           "#1f5fa8",
		"Caddy":          "#2e7d32",
		"Caddy, request": "#8fd694",
		"nginx":          "#c0392b",
		"nginx, no_ca":   "#f1948a",
	},
}

// svg draws grouped horizontal bars, one group per certificate and key
// share (or per load), with the values printed at the bar ends.
func svg(bars []bar, c chart) string {
	const (
		left, width, barH, gap, groupGap = 250, 420, 16, 3, 26
	)
	max := 0.0
	groupMax := map[string]float64{}
	for _, b := range bars {
		max = float64(max2(max, b.value))
		groupMax[b.group] = max2(groupMax[b.group], b.value)
	}
	var body strings.Builder
	y := 40
	group := ""
	for _, b := range bars {
		if b.group != group {
			if group != "" {
				y += groupGap - gap
			}
			group = b.group
			fmt.Fprintf(&body, `<text x="10" y="%d" font-weight="600">%s</text>`+"\n", y+12, html.EscapeString(group))
			y += 20
		}
		scale := max
		if c.perGroup {
			scale = groupMax[b.group]
		}
		w := int(b.value / scale * width)
		fmt.Fprintf(&body, `<text x="%d" y="%d" text-anchor="end" fill="#444">%s</text>`+"\n", left-8, y+12, html.EscapeString(b.label))
		fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", left, y, w, barH, c.colors[b.label])
		unit := c.unit
		if unit == "" {
			unit = " µs"
		}
		fmt.Fprintf(&body, `<text x="%d" y="%d" fill="#222">%.0f%s</text>`+"\n", left+w+6, y+12, b.value, html.EscapeString(unit))
		y += barH + gap
	}
	h := y + 20
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">
<rect width="100%%" height="100%%" fill="#ffffff"/>
<text x="10" y="22" font-size="14" font-weight="700">%s</text>
%s</svg>
`, left+width+90, h, html.EscapeString(c.title), body.String())
}

func max2(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}
