package reqmtls

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLightImport: a crawler that imports this package links nothing that
// only servers need.
func TestLightImport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, serverOnly := range []string{"github.com/prometheus/", "golang.org/x/crypto/acme", "github.com/pires/go-proxyproto",
			"github.com/fsnotify/", "github.com/req-mtls/req-mtls/internal/server", "github.com/req-mtls/req-mtls/internal/auth",
			"github.com/req-mtls/req-mtls/internal/gateway", "github.com/req-mtls/req-mtls/internal/metrics"} {
			if strings.HasPrefix(dep, serverOnly) {
				t.Errorf("the client package links %s", dep)
			}
		}
	}
}
