// Package integration drives the built reaper binary from outside, on real
// processes, process groups, PID namespaces and cgroups: its core
// behaviours (signals, exit codes, teardown, cgroups, instances, locks, the
// guardian, terminals). The packages below it test reaper where it is
// deployed; package itest is the harness they all share.
package integration

import (
	"testing"

	"github.com/reaper-init/reaper/integration/itest"
)

func TestMain(m *testing.M) { itest.Main(m) }
