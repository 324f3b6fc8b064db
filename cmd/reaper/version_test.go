package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionNamesTheCommit: --version names the release, the commit and
// the platform, however the commit reached the build.
func TestVersionNamesTheCommit(t *testing.T) {
	vcs := func(settings ...string) *debug.BuildInfo {
		info := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}
		for i := 0; i < len(settings); i += 2 {
			info.Settings = append(info.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
		}
		return info
	}
	for _, tc := range []struct {
		stamped string
		info    *debug.BuildInfo
		want    string
	}{
		{"1a2b3c", vcs("vcs.revision", "ffff"), "1a2b3c"}, // -X=main.commit wins
		{"", vcs("vcs.revision", "61382ff"), "61382ff"},
		{"", vcs("vcs.revision", "61382ff", "vcs.modified", "true"), "61382ff-dirty"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "v0.1.0"}}, "module v0.1.0"}, // go install ...@v0.1.0
		{"", vcs(), "unknown"},
		{"", nil, "unknown"},
	} {
		commit = tc.stamped
		if got := buildCommit(tc.info); got != tc.want {
			t.Errorf("commit %q, build info %+v: %q, want %q", tc.stamped, tc.info, got, tc.want)
		}
	}
	commit = "1a2b3c"
	defer func() { commit = "" }()
	line := versionLine()
	if want := "reaper version " + version + " (commit 1a2b3c, linux/" + runtime.GOARCH; !strings.HasPrefix(line, want) {
		t.Errorf("--version: %q, want %q...", line, want)
	}
	for goarm, want := range map[string]string{"6": "linux/arm/v6", "7,softfloat": "linux/arm/v7", "": "linux/arm"} {
		if got := platformOf("linux", "arm", goarm); got != want {
			t.Errorf("platformOf(linux, arm, %q) = %q, want %q", goarm, got, want)
		}
	}
}
