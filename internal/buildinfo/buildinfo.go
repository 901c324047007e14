// Package buildinfo holds the version stamped into every binary at link time
// (-ldflags "-X github.com/tillwatch/tillwatch/internal/buildinfo.Version=…").
package buildinfo

import "runtime"

// Version is the release version; "dev" for an unstamped build.
var Version = "0.1.0-dev"

// Commit is the source revision, when stamped.
var Commit = ""

// String is what `<binary> version` prints.
func String(binary string) string {
	s := binary + " " + Version
	if Commit != "" {
		s += " (" + Commit + ")"
	}
	return s + " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
}
