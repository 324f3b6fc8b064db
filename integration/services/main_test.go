// Package services tests reaper around real services and runners: nginx,
// redis, gunicorn, PostgreSQL, a CI job that starts daemons, and GitHub
// Actions workflows run by act.
package services

import (
	"testing"

	"github.com/reaper-init/reaper/integration/itest"
)

func TestMain(m *testing.M) { itest.Main(m) }
