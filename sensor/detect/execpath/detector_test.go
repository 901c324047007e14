package execpath

import (
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
)

func builtin(t *testing.T) []Rule {
	t.Helper()
	rs, err := LoadRules(rules.Builtin, "exec")
	if err != nil {
		t.Fatalf("built-in rules do not load: %v", err)
	}
	return rs
}

// fixtureModes is a fake directory tree: path -> mode.
type fixtureModes map[string]fs.FileMode

func (m fixtureModes) stat(dir string) (fs.FileMode, error) {
	if mode, ok := m[dir]; ok {
		return mode, nil
	}
	return 0, fs.ErrNotExist
}

func execEvent(exe string) *event.Event {
	st := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	return &event.Event{
		Event:   event.Meta{Kind: event.KindEvent, Category: []string{"process"}, Type: []string{"start"}, Action: "exec"},
		Process: &event.Process{PID: 4242, Name: "x", Executable: exe, Start: &st, Parent: &event.ParentProcess{PID: 1, Name: "bash"}},
	}
}

func TestDetect(t *testing.T) {
	t.Parallel()
	modes := fixtureModes{
		"/tmp":           fs.ModeDir | fs.ModeSticky | 0o777,
		"/var/tmp/drop":  fs.ModeDir | 0o777,
		"/usr/bin":       fs.ModeDir | 0o755,
		"/tmp/go-build1": fs.ModeDir | 0o700,
	}
	tests := []struct {
		name     string
		exe      string
		action   string
		wantRule string
		wantResp string
	}{
		{"shared memory", "/dev/shm/payload", "exec", "TW-EXEC-0001", event.ActionKill},
		{"run/shm", "/run/shm/.x/y", "exec", "TW-EXEC-0001", event.ActionKill},
		{"memfd", "/memfd:agent (deleted)", "exec", "TW-EXEC-0001", event.ActionKill},
		{"world-writable /tmp", "/tmp/agent.exe", "exec", "TW-EXEC-0002", event.ActionNone},
		{"world-writable without sticky", "/var/tmp/drop/x", "exec", "TW-EXEC-0002", event.ActionNone},
		{"private dir under /tmp", "/tmp/go-build1/test.bin", "exec", "", ""},
		{"system binary", "/usr/bin/ls", "exec", "", ""},
		{"unknown dir", "/nowhere/x", "exec", "", ""},
		{"exit events are ignored", "/dev/shm/payload", "exit", "", ""},
		{"lookalike prefix", "/devil/shm/x", "exec", "", ""},
	}
	d := New(builtin(t), fixtureModes(modes).stat)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ev := execEvent(tc.exe)
			ev.Event.Action = tc.action
			got := d.Detect(ev)
			if tc.wantRule == "" {
				if len(got) != 0 {
					t.Fatalf("want no detection, got %s", got[0].Alert.Rule.ID)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("want one detection, got %d", len(got))
			}
			a := got[0].Alert
			if a.Rule.ID != tc.wantRule || got[0].Response != tc.wantResp {
				t.Errorf("got rule %s response %q, want %s %q", a.Rule.ID, got[0].Response, tc.wantRule, tc.wantResp)
			}
			if a.Process.PID != 4242 || a.Process.Parent.Name != "bash" || len(a.Threat.Technique.ID) == 0 {
				t.Errorf("alert lost process or ATT&CK context: %+v", a)
			}
			if tc.wantResp == event.ActionKill && (got[0].Target == nil || got[0].Target.PID != 4242 || got[0].Target.Start == 0) {
				t.Errorf("kill proposed without a precise target: %+v", got[0].Target)
			}
			// The detector must not hand out the caller's process struct.
			a.Process.Name = "changed"
			if ev.Process.Name != "x" {
				t.Error("alert shares the event's process struct")
			}
		})
	}
}

func TestDirModeIsCached(t *testing.T) {
	t.Parallel()
	calls := 0
	d := New(builtin(t), func(string) (fs.FileMode, error) { calls++; return fs.ModeDir | 0o777, nil })
	for range 100 {
		d.Detect(execEvent("/tmp/x"))
	}
	if calls != 1 {
		t.Errorf("stat called %d times for one directory, want 1 (cached)", calls)
	}
}

func TestRealWorldWritableDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	d := New(builtin(t), nil)
	got := d.Detect(execEvent(dir + "/dropped"))
	if len(got) != 1 || got[0].Alert.Rule.ID != "TW-EXEC-0002" {
		t.Fatalf("a real 1777 directory must match TW-EXEC-0002, got %v", got)
	}
}

func TestLoadRulesReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := LoadRules(os.DirFS("testdata/badrules"), "exec")
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"BAD-1", "match", "not absolute", "severity", "response", "technique"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestLoadRulesRejectsUnknownKeysAndDuplicates(t *testing.T) {
	t.Parallel()
	typo := fstest.MapFS{"exec/t.yaml": {Data: []byte("rules:\n  - id: X\n    nmae: typo\n")}}
	if _, err := LoadRules(typo, "exec"); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Errorf("unknown key must be an error naming it, got %v", err)
	}
	builtinRaw, err := fs.ReadFile(rules.Builtin, "exec/exec-location.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dupRaw, err := os.ReadFile("testdata/duprules/exec/a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	merged := fstest.MapFS{"exec/a.yaml": {Data: builtinRaw}, "exec/b.yaml": {Data: dupRaw}}
	if _, err := LoadRules(merged, "exec"); err == nil || !strings.Contains(err.Error(), "already defined") {
		t.Errorf("duplicate rule id must be an error, got %v", err)
	}
}

func TestRuleSamplesAreChecked(t *testing.T) {
	t.Parallel()
	bad := fstest.MapFS{"exec/s.yaml": {Data: []byte(`rules:
  - id: S-1
    name: sample mismatch
    match: memory
    paths: [/dev/shm/]
    severity: 10
    technique: [{id: T1059, name: x}]
    tests: {positive: [/usr/bin/ls], negative: [/dev/shm/x]}
`)}}
	_, err := LoadRules(bad, "exec")
	if err == nil || !strings.Contains(err.Error(), "positive sample") || !strings.Contains(err.Error(), "negative sample") {
		t.Errorf("rule samples must be verified at load, got %v", err)
	}
}
