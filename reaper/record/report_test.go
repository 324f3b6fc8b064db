package record

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeWithin runs Write, failing the test if it does not return within
// a minute (a FIFO opened for writing would block it for ever).
func writeWithin(t *testing.T, path string, r Report) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- Write(path, r) }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatalf("Write(%s) blocked", path)
		return nil
	}
}

func TestWriteReplacesWhatIsPlanted(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("precious"), 0o644)
	r := Report{Command: []string{"sleep", "\u009b2K\x7f"}, ExitCode: 3}
	plants := map[string]func(path string) error{
		"nothing": func(string) error { return nil },
		"fifo":    func(path string) error { return syscall.Mkfifo(path, 0o666) },
		"symlink": func(path string) error { return os.Symlink(target, path) },
		"file":    func(path string) error { return os.WriteFile(path, []byte("old"), 0o666) },
	}
	for name, plant := range plants {
		path := filepath.Join(dir, name+".json")
		if err := plant(path); err != nil {
			t.Fatal(err)
		}
		if err := writeWithin(t, path, r); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		st, err := os.Lstat(path)
		if err != nil || st.Mode() != 0o600 {
			t.Errorf("%s: the report is %v (%v), want a regular file of mode 0600", name, st.Mode(), err)
		}
		data, _ := os.ReadFile(path)
		var back Report
		if err := json.Unmarshal(data, &back); err != nil || back.ExitCode != 3 || back.Command[1] != r.Command[1] {
			t.Errorf("%s: report %q: %v", name, data, err)
		}
		if strings.ContainsAny(string(data), "\u009b\x7f") {
			t.Errorf("%s: DEL or a C1 control raw in the report: %q", name, data)
		}
	}
	if data, _ := os.ReadFile(target); string(data) != "precious" {
		t.Errorf("the symbolic link's target was written: %q", data)
	}
	// A directory at the path: an error, and nothing left behind.
	path := filepath.Join(dir, "dir.json")
	os.Mkdir(path, 0o755)
	if err := writeWithin(t, path, r); err == nil || !strings.Contains(err.Error(), "cannot write report "+path) {
		t.Errorf("a directory at the path: %v", err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing", "r.json"), dir + "/"} {
		if err := writeWithin(t, bad, r); err == nil {
			t.Errorf("Write(%s) gave no error", bad)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
