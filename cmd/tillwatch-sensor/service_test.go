package main

import (
	"context"
	"io"
	"runtime"
	"testing"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/cli"
)

// TestServiceCommandOnlyOnWindows: `service install|uninstall` exists on
// Windows and is an unknown command (exit 2) everywhere else, where a
// console run is never mistaken for a service.
func TestServiceCommandOnlyOnWindows(t *testing.T) {
	t.Parallel()
	root := newRoot(io.Discard, io.Discard)
	found := false
	for _, c := range root.Commands() {
		if c.Name() == "service" {
			found = true
		}
	}
	if want := runtime.GOOS == "windows"; found != want {
		t.Fatalf("service command present %v on %s, want %v", found, runtime.GOOS, want)
	}
	if runtime.GOOS == "windows" {
		return
	}
	err := cli.Execute(context.Background(), newRoot(io.Discard, io.Discard), []string{"service", "install"})
	if code := cli.ExitCode(err); code != cfgfile.ExitUsage {
		t.Errorf("service install on %s: exit %d (%v), want %d", runtime.GOOS, code, err, cfgfile.ExitUsage)
	}
	if _, ok := runService([]string{"run"}); ok {
		t.Error("runService claimed a console run as a service")
	}
}
