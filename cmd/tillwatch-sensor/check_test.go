package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/cli"
)

// TestCheckExitCodes: `check` alone answers "what does this host support"
// and exits 0 even though the default config has no collector; with -c or
// run's flags it also checks that config and exits non-zero, with the
// reason on one line, when the sensor could not run with it.
func TestCheckExitCodes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// monitor mode so the good config can run without CAP_KILL.
	write(good, "mode: monitor\nstate_dir: "+filepath.Join(dir, "state")+"\ncollector:\n  disabled: true\n")
	write(bad, "mode: monitor\ncollector:\n  url: http://nope\n")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		out, err string // substrings of stdout and of the error
	}{
		{"no config", []string{"check"}, 0, "no config given", ""},
		{"no config json", []string{"check", "--json"}, 0, `"config_checked": false`, ""},
		{"good file", []string{"check", "-c", good}, 0, "result: the sensor can run", ""},
		{"bad file", []string{"check", "-c", bad}, cfgfile.ExitUsage, "result: the sensor cannot run", "collector.url"},
		{"bad flags", []string{"check", "--mode", "monitor", "--collector", "http://nope"}, cfgfile.ExitUsage, "cannot run", "collector.ca_file"},
		{"flags only", []string{"check", "--mode", "monitor", "--no-collector", "--state-dir", filepath.Join(dir, "s2")}, 0, "result: the sensor can run", ""},
		{"missing file", []string{"check", "-c", filepath.Join(dir, "absent.yaml")}, cfgfile.ExitUsage, "", "absent.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			err := cli.Execute(context.Background(), newRoot(&out, &out), tc.args)
			if code := cli.ExitCode(err); code != tc.code {
				t.Fatalf("exit %d (%v), want %d; output:\n%s", code, err, tc.code, out.String())
			}
			if !strings.Contains(out.String(), tc.out) {
				t.Errorf("output lacks %q:\n%s", tc.out, out.String())
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n")) {
				t.Errorf("error %q: want one line containing %q", err, tc.err)
			}
		})
	}
}
