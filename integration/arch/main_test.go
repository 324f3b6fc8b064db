// Package arch tests reaper on every architecture: the release binaries of
// .ci/release, and reaper booted on kernels of other architectures under
// qemu.
package arch

import (
	"testing"

	"github.com/reaper-init/reaper/integration/itest"
)

func TestMain(m *testing.M) { itest.Main(m) }
