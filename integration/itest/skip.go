package itest

import (
	"os"
	"testing"
)

// requireAll is set in CI (REAPER_REQUIRE_ALL=1): there every test must run,
// and a test that would skip fails instead, so that a missing tool, engine
// or privilege can never pass for a pass.
var requireAll = os.Getenv("REAPER_REQUIRE_ALL") == "1"

// Skip skips the test with the reason given, or fails it when requireAll is
// set.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	if requireAll {
		t.Fatalf("cannot run, and REAPER_REQUIRE_ALL=1 forbids skipping: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot skips tests that need privileges this run does not have.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root (PID namespaces, cgroups); CI runs as root")
	}
}

// RequirePython returns Debian's python3, or skips.
func RequirePython(t *testing.T) string {
	t.Helper()
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		Skip(t, "no %s (apt-get install python3): %v", python, err)
	}
	return python
}
