package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		bi   debug.BuildInfo
		want string
	}{
		{debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.0"}},
			"client v1.2.0 go1.26.0"},
		{debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "1c07dae2b1c3d4e5f60718293a4b5c6d7e8f9012"}, {Key: "vcs.modified", Value: "true"}}},
			"client (devel) revision 1c07dae2b1c3 (modified) go1.26.0"},
		{debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20251122164100-1c07dae2b1c3+dirty"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "1c07dae2b1c3d4e5f60718293a4b5c6d7e8f9012"}, {Key: "vcs.modified", Value: "true"}}},
			"client v0.0.0-20251122164100-1c07dae2b1c3+dirty"},
		{debug.BuildInfo{Main: debug.Module{Version: "v1.2.0"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc1234"}, {Key: "vcs.modified", Value: "false"}}},
			"client v1.2.0 revision abc1234"},
		{debug.BuildInfo{}, "client (devel)"},
	} {
		if got := format("client", &tc.bi); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

// TestString: a test binary has build information; the line names the
// command and the Go version.
func TestString(t *testing.T) {
	s := String("server")
	if !strings.HasPrefix(s, "server ") || !strings.Contains(s, " go1.") {
		t.Errorf("String = %q", s)
	}
}
