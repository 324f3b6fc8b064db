package main

import (
	"runtime"
	"runtime/debug"
)

// commit is the commit reaper was built from. A build in a git checkout
// records it by itself (go build's -buildvcs); a build without one, as the
// Dockerfile's and .ci/release's, stamps it with
// -ldflags "-X=main.commit=...".
var commit = ""

// versionLine is what --version prints: reaper's release, the commit it was
// built from and the platform it was built for, as in
// "reaper version 0.1.0 (commit 61382ff3c1f2, linux/arm/v7)".
func versionLine() string {
	info, _ := debug.ReadBuildInfo()
	return "reaper version " + version + " (commit " + buildCommit(info) + ", " + platform(info) + ")"
}

// buildCommit is the commit stamped at link time, else the one go build
// recorded (with "-dirty" for uncommitted changes), else the module's
// version (go install ...@VERSION), else "unknown".
func buildCommit(info *debug.BuildInfo) string {
	if commit != "" {
		return commit
	}
	if info == nil {
		return "unknown"
	}
	if revision := setting(info, "vcs.revision"); revision != "" {
		if setting(info, "vcs.modified") == "true" {
			revision += "-dirty"
		}
		return revision
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return "module " + v
	}
	return "unknown"
}

// platform is the platform reaper was built for, as container engines name
// it: "linux/amd64", "linux/arm/v6".
func platform(info *debug.BuildInfo) string {
	return platformOf(runtime.GOOS, runtime.GOARCH, setting(info, "GOARM"))
}

// platformOf names the platform of goos and goarch; goarm is GOARM's value
// ("7", or "7,softfloat").
func platformOf(goos, goarch, goarm string) string {
	if goarch == "arm" && goarm != "" {
		return goos + "/arm/v" + goarm[:1]
	}
	return goos + "/" + goarch
}

// setting returns the build setting key of info, or "".
func setting(info *debug.BuildInfo, key string) string {
	if info == nil {
		return ""
	}
	for _, s := range info.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}
