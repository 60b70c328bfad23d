package examples

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the tests when a goroutine one of them started is still
// running after the last one ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
