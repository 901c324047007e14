package sigma

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
)

func builtin(t *testing.T) []*Rule {
	t.Helper()
	rs, err := Load(rules.Builtin, "sigma")
	if err != nil {
		t.Fatalf("built-in Sigma rules do not load: %v", err)
	}
	return rs
}

func TestBuiltinRulesLintAndTest(t *testing.T) {
	t.Parallel()
	if rs := builtin(t); len(rs) != 5 {
		t.Errorf("loaded %d built-in rules, want 5", len(rs))
	}
	for _, p := range LintDir(rules.Builtin, "sigma") {
		t.Errorf("lint: %s", p)
	}
	for _, p := range TestDir(rules.Builtin, "sigma") {
		t.Errorf("samples: %s", p)
	}
}

// TestSamples runs every shipped sample through the detector, as a live
// event would go, and checks the alert a positive sample raises.
func TestSamples(t *testing.T) {
	t.Parallel()
	rs := builtin(t)
	byStem := map[string]*Rule{}
	for _, r := range rs {
		byStem[stemOf(r.File)] = r
	}
	files, err := fs.Glob(rules.Builtin, "sigma/tests/*/*/*.json")
	if err != nil || len(files) < 2*len(rs) {
		t.Fatalf("samples: %v (%d files)", err, len(files))
	}
	for _, f := range files {
		parts := strings.Split(f, "/") // sigma/tests/STEM/KIND/NAME.json
		stem, kind := parts[2], parts[3]
		t.Run(stem+"/"+kind+"/"+strings.TrimSuffix(parts[4], ".json"), func(t *testing.T) {
			t.Parallel()
			r := byStem[stem]
			if r == nil {
				t.Fatalf("no rule file %s.yml", stem)
			}
			ev, err := readSample(rules.Builtin, f)
			if err != nil {
				t.Fatal(err)
			}
			// The rule's own platform, so Windows rules run here too.
			d := New(rs, r.Product)
			var got []string
			var alert *event.Event
			for _, det := range d.Detect(&ev) {
				got = append(got, det.Alert.Rule.ID)
				if det.Alert.Rule.ID == r.ID {
					alert = &det.Alert
				}
			}
			if d.Errors() != 0 {
				t.Fatalf("%d evaluation errors", d.Errors())
			}
			switch {
			case kind == "positive" && alert == nil:
				t.Fatalf("rule %s did not fire (fired: %v)", r.ID, got)
			case kind == "negative" && slices.Contains(got, r.ID):
				t.Fatalf("rule %s fired on a negative sample", r.ID)
			case kind == "negative":
				return
			}
			checkAlert(t, r, alert, &ev)
		})
	}
}

func checkAlert(t *testing.T, r *Rule, a *event.Event, src *event.Event) {
	t.Helper()
	if a.Event.Kind != event.KindAlert || a.Event.Dataset != event.DatasetAlerts || a.Event.Action != Action {
		t.Errorf("event = %+v", a.Event)
	}
	if a.Rule.Ruleset != event.RulesetSigma || a.Rule.ID != r.ID || a.Rule.Name != r.Title || a.Rule.Description == "" || a.Rule.Category != r.Category {
		t.Errorf("rule = %+v", *a.Rule)
	}
	if !slices.Equal(a.Rule.Author, []string{"tillwatch"}) {
		t.Errorf("rule.author = %q", a.Rule.Author)
	}
	if want := Severities[r.Level]; a.Event.Severity != want || a.Event.RiskScore != float64(want) {
		t.Errorf("severity %d, risk %v, want %d for level %s", a.Event.Severity, a.Event.RiskScore, want, r.Level)
	}
	if a.Threat == nil || len(a.Threat.Technique.ID) == 0 || !strings.HasPrefix(a.Threat.Technique.ID[0], "T") ||
		a.Threat.Technique.Name != nil || a.Threat.Tactic == nil || !strings.HasPrefix(a.Threat.Tactic.ID[0], "TA") {
		t.Errorf("threat = %+v", a.Threat)
	}
	if src.Process != nil && (a.Process == nil || a.Process.PID != src.Process.PID || a.Process == src.Process) {
		t.Errorf("process not copied: %+v", a.Process)
	}
	if src.File != nil && (a.File == nil || a.File.Path != src.File.Path) {
		t.Errorf("file not copied: %+v", a.File)
	}
}

func TestAlertMetadata(t *testing.T) {
	t.Parallel()
	rs := builtin(t)
	byID := map[string]*Rule{}
	for _, r := range rs {
		byID[r.ID] = r
	}
	tests := []struct {
		id, level, technique, tactic, reference string
		severity                                int
	}{
		{"6c1f8a0e-3b55-4a8e-9d0c-7f2d1e3a4b01", "high", "T1140", "TA0005", "https://www.huntress.com/blog/rapid-response-kaseya-vsa-mass-msp-ransomware-incident", 73},
		{"2e8b4d61-9f3a-4c7e-b5d2-6a1f8e9c7b05", "critical", "T1562.001", "TA0005", "", 99},
		{"9a6d3e12-7c4b-4e5f-8a1d-3b2c6f7e8d04", "medium", "T1219", "TA0011", "", 47},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			t.Parallel()
			r := byID[tc.id]
			if r == nil {
				t.Fatal("rule not loaded")
			}
			if r.Level != tc.level || r.Severity != tc.severity || !slices.Equal(r.Techniques, []string{tc.technique}) ||
				r.Tactic == nil || r.Tactic.ID != tc.tactic || r.Reference != tc.reference {
				t.Errorf("got level %s severity %d techniques %v tactic %+v reference %q", r.Level, r.Severity, r.Techniques, r.Tactic, r.Reference)
			}
		})
	}
	for level, want := range map[string]int{"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99} {
		if Severities[level] != want {
			t.Errorf("level %s: severity %d, want %d", level, Severities[level], want)
		}
	}
}

func TestLintBrokenRules(t *testing.T) {
	t.Parallel()
	ps := LintDir(os.DirFS("testdata/broken"), "sigma")
	var got []string
	for _, p := range ps {
		got = append(got, p.String())
	}
	want := []string{
		"sigma/bad_fields.yml:14: search selection: field CommandLine: unknown modifier sideways",
		"sigma/bad_fields.yml:16: search sel_re: field CommandLine: re: error parsing regexp",
		"sigma/bad_fields.yml: no positive samples: add ECS event JSON files under tests/bad_fields/positive/ beside the rule",
		`sigma/bad_shape.yml:4: warning: unknown attribute "levle" (not in the Sigma rule specification; ignored)`,
		"sigma/bad_shape.yml: warning: no level: severity medium (47) assumed",
		"sigma/bad_shape.yml:13: condition names missing, which is not a search of this rule",
		`sigma/bad_condition.yml:9: condition "selection and (not": condition ends early`,
		"sigma/not_here.yml: skipped: not applicable: logsource category network_connection: the sensor has no such events",
		"sigma/unparsable.yml:4: does not parse",
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
			t.Errorf("missing problem %q", w)
		}
	}
	if t.Failed() {
		t.Logf("got:\n%s", strings.Join(got, "\n"))
	}
	// Loading skips the broken files and keeps the rest: nothing here may
	// stop a sensor.
	rs, lps := LoadDir(os.DirFS("testdata/broken"), "sigma")
	if len(rs) != 1 || rs[0].ID != "55555555-5555-4555-8555-555555555555" || rs[0].NotApplicable == "" {
		t.Errorf("loaded %d rules: %+v", len(rs), rs)
	}
	if err := Errors(lps); err == nil || !strings.Contains(err.Error(), "sigma/bad_fields.yml:14:") {
		t.Errorf("Errors = %v", err)
	}
	if n := New(rs, "linux").Rules(); n != 0 {
		t.Errorf("a not-applicable rule is evaluated (%d rules)", n)
	}
}

func TestLoadAllDuplicateAndMissing(t *testing.T) {
	t.Parallel()
	rs, ps := LoadAll(rules.Builtin, "sigma", []string{t.TempDir()})
	if len(ps) != 0 || len(rs) != 5 {
		t.Fatalf("extra folder without sigma/: %d rules, %v", len(rs), ps)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sigma"), 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := fs.ReadFile(rules.Builtin, "sigma/linux_security_tool_stopped.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sigma", "copy.yml"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	rs, ps = LoadAll(rules.Builtin, "sigma", []string{dir})
	want := filepath.Join(dir, "sigma/copy.yml") + ": rule id 4f2a9c71-5d3e-4b8f-9e6a-1c7b2d8e9f03 already defined in sigma/linux_security_tool_stopped.yml"
	if err := Errors(ps); err == nil || err.Error() != want || len(rs) != 5 {
		t.Errorf("duplicate id: %d rules, %v\nwant %s", len(rs), err, want)
	}
	rs, ps = LoadAll(rules.Builtin, "sigma", []string{"testdata/broken"})
	if err := Errors(ps); err == nil || !strings.Contains(err.Error(), "testdata/broken/sigma/bad_fields.yml:14:") || len(rs) != 6 {
		t.Errorf("broken extra folder: %d rules, %v", len(rs), err)
	}
}

func TestDetectorScope(t *testing.T) {
	t.Parallel()
	rs := builtin(t)
	if n := New(rs, "linux").Rules(); n != 3 {
		t.Errorf("linux evaluates %d rules, want 3", n)
	}
	if n := New(rs, "windows").Rules(); n != 2 {
		t.Errorf("windows evaluates %d rules, want 2", n)
	}
	d := New(rs, "linux")
	exec := func(kind, action, cmd string) *event.Event {
		return &event.Event{Event: event.Meta{Kind: kind, Action: action}, Process: &event.Process{
			PID: 7, Executable: "/usr/bin/systemctl", CommandLine: cmd}}
	}
	tests := []struct {
		name string
		ev   *event.Event
		want int
	}{
		{"exec matches", exec(event.KindEvent, "exec", "systemctl stop auditd "), 1},
		{"exit is not process_creation", exec(event.KindEvent, "exit", "systemctl stop auditd "), 0},
		{"alerts are not evaluated", exec(event.KindAlert, "exec", "systemctl stop auditd "), 0},
		{"health is not evaluated", &event.Event{Event: event.Meta{Kind: event.KindState}}, 0},
		{"file delete is not file_event", &event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "delete", Dataset: event.DatasetFile},
			File: &event.File{Path: "/tmp/anydesk"}}, 0},
		{"file rename is file_event", &event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "rename", Dataset: event.DatasetFile},
			File: &event.File{Path: "/tmp/anydesk"}}, 1},
		{"windows rule not run on linux", &event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "exec"}, Process: &event.Process{
			Executable: `C:\Windows\System32\certutil.exe`, CommandLine: `certutil -decode a.crt a.exe`}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := d.Detect(tc.ev); len(got) != tc.want {
				t.Errorf("%d detections, want %d", len(got), tc.want)
			}
		})
	}
}

func TestUserFallsBackToEventUser(t *testing.T) {
	t.Parallel()
	ev := &event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "exec"}, Process: &event.Process{PID: 3},
		User: &event.User{Name: "pos"}}
	v := values(CategoryProcess, ev).raw
	if v["User"] != "pos" || v["ProcessId"] != "3" || v["ParentProcessId"] != "" || v["ParentImage"] != "" {
		t.Errorf("values = %v", v)
	}
}

func BenchmarkDetect(b *testing.B) {
	rs, err := Load(rules.Builtin, "sigma")
	if err != nil {
		b.Fatal(err)
	}
	d := New(rs, "linux")
	ev := &event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "exec"}, Process: &event.Process{
		PID: 7, Executable: "/usr/bin/ls", CommandLine: "ls -la /var/lib/pos", WorkingDirectory: "/root",
		Parent: &event.ParentProcess{PID: 1, Executable: "/usr/bin/bash", CommandLine: "-bash"}}}
	b.ReportAllocs()
	for b.Loop() {
		d.Detect(ev)
	}
}
