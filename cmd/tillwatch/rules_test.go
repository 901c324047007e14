package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/rules"
)

// A rule tree whose ransomware thresholds do not load fails `rules test`,
// so `rules bundle` (which runs it first) never signs it.
func TestRulesTestChecksRansomwareThresholds(t *testing.T) {
	t.Parallel()
	good, err := fs.ReadFile(rules.Builtin, "ransomware/thresholds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		content []byte
		ok      bool
	}{
		{"built-in thresholds", good, true},
		{"alert_score not a number", []byte("window: 60s\nalert_score: not-a-number\n"), false},
		{"unknown key", append(bytes.Clone(good), []byte("alert_scroe: 5\n")...), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.Mkdir(filepath.Join(dir, "ransomware"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "ransomware", "thresholds.yaml"), tc.content, 0o644); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := runRules(&out, dir, true)
			if (err == nil) != tc.ok {
				t.Fatalf("runRules: %v\n%s", err, out.String())
			}
			if !tc.ok && !strings.Contains(out.String(), "ransomware") {
				t.Errorf("the problem does not name the ransomware folder:\n%s", out.String())
			}
		})
	}
}
