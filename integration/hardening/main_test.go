// Package hardening tests reaper under hostile conditions: signal and orphan
// storms, pid reuse, tight pids.max, unprivileged runs, forged process names
// and paths, a notify relay bypassed, namespace escapes.
package hardening

import (
	"testing"

	"github.com/reaper-init/reaper/integration/itest"
)

func TestMain(m *testing.M) { itest.Main(m) }
