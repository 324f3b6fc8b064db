// Package systemd tests reaper as a systemd service in a real systemd booted
// with systemd-nspawn: restarts, stops, the native protocols (notify,
// watchdog, sockets, reload, user units), and the OpenClaw gateway as a unit.
package systemd

import (
	"testing"

	"github.com/reaper-init/reaper/integration/itest"
)

func TestMain(m *testing.M) { itest.Main(m) }
