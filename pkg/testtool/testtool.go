// Package testtool holds helpers shared by kiln's tests.
package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// RequireEnv is the environment variable that turns a missing tool from a
// skipped test into a failed one. `make test` sets it, so that CI never passes
// by skipping the tests that exercise real components.
const RequireEnv = "KILN_REQUIRE_TOOLS"

// Need returns the path of the named executable. When it is not installed the
// test is skipped, or failed when RequireEnv is set to a non-empty value.
func Need(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("%s is required (%s is set) but not installed: %v", name, RequireEnv, err)
	}
	t.Skipf("%s not installed; run `make test` to install it", name)
	return ""
}
