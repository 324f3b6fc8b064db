// Package engines tests reaper as the init of container engines: the image
// built from the Dockerfile, podman's and Docker's --init, dockerd, and pods
// on a real kubelet and containerd (the Kubernetes test bed).
package engines

import (
	"testing"

	"github.com/reaper-init/reaper/integration/itest"
)

func TestMain(m *testing.M) { itest.Main(m) }
