package notify_test

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/reaper-init/reaper/reaper/systemd/notify"
)

// A wrapper relays when it was given a NOTIFY_SOCKET, and hands COMMAND
// the relay's address instead of the manager's. Without NOTIFY_SOCKET it
// changes nothing; when the relay cannot be opened, COMMAND gets the
// manager's address as it was.
func Example() {
	env := os.Environ()
	if upstream, ok := os.LookupEnv(notify.Variable); ok {
		isDescendant := func(c unix.Ucred) bool { return c.Pid > 0 /* ... one of the wrapper's descendants */ }
		relay, err := notify.Open(upstream, isDescendant, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "no notification relay:", err)
		} else {
			defer relay.Close()
			go relay.Serve()
			env = replaceEnv(env, notify.Variable, relay.Address())
		}
	}
	_ = env // start COMMAND with env
}

func replaceEnv(env []string, name, value string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if len(kv) <= len(name) || kv[:len(name)+1] != name+"=" {
			out = append(out, kv)
		}
	}
	return append(out, name+"="+value)
}
