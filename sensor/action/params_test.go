package action

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateMatrix(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", maxValueLen+1)
	sha := strings.Repeat("ab", 32)
	tests := []struct {
		name   string
		action string
		params map[string]string
		want   string // "" = valid, else a substring of the error
	}{
		{"disable one product", ActDisableRMM, map[string]string{"product": "teamviewer"}, ""},
		{"disable every product", ActDisableRMM, map[string]string{"product": "*"}, ""},
		{"disable without product", ActDisableRMM, nil, "product is required"},
		{"disable with upper case", ActDisableRMM, map[string]string{"product": "TeamViewer"}, "not a catalog id"},
		{"disable with traversal", ActDisableRMM, map[string]string{"product": "../x"}, "not a catalog id"},
		{"disable with unknown key", ActDisableRMM, map[string]string{"product": "x1", "force": "1"}, `unknown parameter "force"`},
		{"enable one product", ActEnableRMM, map[string]string{"product": "anydesk"}, ""},
		{"enable empty product", ActEnableRMM, map[string]string{"product": ""}, "is empty"},
		{"kill by pid without start time", ActKillProcess, map[string]string{"pid": "1234"}, "pid needs start_time"},
		{"kill by pid and start", ActKillProcess, map[string]string{"pid": "1234", "start_time": "1700000000000"}, ""},
		{"kill by name", ActKillProcess, map[string]string{"name": "xmrig"}, ""},
		{"kill by sha256", ActKillProcess, map[string]string{"sha256": sha}, ""},
		{"kill by upper-case sha256", ActKillProcess, map[string]string{"sha256": strings.ToUpper(sha)}, ""},
		{"kill by path", ActKillProcess, map[string]string{"path": "/opt/x/agent"}, ""},
		{"kill with no selector", ActKillProcess, map[string]string{}, "exactly one of"},
		{"kill with two selectors", ActKillProcess, map[string]string{"pid": "12", "name": "x"}, "exactly one of"},
		{"kill start without pid", ActKillProcess, map[string]string{"name": "x", "start_time": "1"}, "only valid with pid"},
		{"kill pid zero", ActKillProcess, map[string]string{"pid": "0", "start_time": "1700000000000"}, "not a positive decimal"},
		{"kill negative pid", ActKillProcess, map[string]string{"pid": "-1", "start_time": "1700000000000"}, "not a positive decimal"},
		{"kill pid with sign", ActKillProcess, map[string]string{"pid": "+5", "start_time": "1700000000000"}, "not a positive decimal"},
		{"kill pid hex", ActKillProcess, map[string]string{"pid": "0x10", "start_time": "1700000000000"}, "not a positive decimal"},
		{"kill pid too large", ActKillProcess, map[string]string{"pid": "9999999999", "start_time": "1700000000000"}, "out of range"},
		{"kill pid with space", ActKillProcess, map[string]string{"pid": "12 ", "start_time": "1700000000000"}, "not a positive decimal"},
		{"kill start not a number", ActKillProcess, map[string]string{"pid": "12", "start_time": "yesterday"}, "unix milliseconds"},
		{"kill name with slash", ActKillProcess, map[string]string{"name": "bin/sh"}, "bare name"},
		{"kill name dot dot", ActKillProcess, map[string]string{"name": ".."}, "not a process name"},
		{"kill name with newline", ActKillProcess, map[string]string{"name": "a\nb"}, "control characters"},
		{"kill name with NUL", ActKillProcess, map[string]string{"name": "a\x00b"}, "control characters"},
		{"kill sha256 short", ActKillProcess, map[string]string{"sha256": "abc"}, "64 hex"},
		{"kill relative path", ActKillProcess, map[string]string{"path": "opt/x"}, "not absolute"},
		{"quarantine path", ActQuarantineFile, map[string]string{"path": "/srv/pos/evil.exe"}, ""},
		{"quarantine traversal", ActQuarantineFile, map[string]string{"path": "/srv/pos/../../etc/shadow"}, "not clean"},
		{"quarantine dot", ActQuarantineFile, map[string]string{"path": "/srv/./x"}, "not clean"},
		{"quarantine double slash", ActQuarantineFile, map[string]string{"path": "/srv//x"}, "not clean"},
		{"quarantine trailing slash", ActQuarantineFile, map[string]string{"path": "/srv/x/"}, "not clean"},
		{"quarantine relative", ActQuarantineFile, map[string]string{"path": "x"}, "not absolute"},
		{"quarantine NUL", ActQuarantineFile, map[string]string{"path": "/srv/x\x00y"}, "control characters"},
		{"quarantine newline", ActQuarantineFile, map[string]string{"path": "/srv/x\ny"}, "control characters"},
		{"quarantine invalid utf8", ActQuarantineFile, map[string]string{"path": "/srv/\xff"}, "invalid UTF-8"},
		{"quarantine too long", ActQuarantineFile, map[string]string{"path": "/" + long}, "longer than"},
		{"quarantine missing path", ActQuarantineFile, map[string]string{}, "path is required"},
		{"isolate", ActIsolateHost, nil, ""},
		{"isolate with allow", ActIsolateHost, map[string]string{"allow": "0.0.0.0/0"}, "takes no parameters"},
		{"release", ActReleaseHost, map[string]string{}, ""},
		{"scan", ActScan, map[string]string{"paths": "/srv/a,/srv/b"}, ""},
		{"scan empty element", ActScan, map[string]string{"paths": "/srv/a,"}, "is empty"},
		{"scan relative element", ActScan, map[string]string{"paths": "/srv/a,b"}, "not absolute"},
		{"scan too many", ActScan, map[string]string{"paths": strings.Repeat("/a,", maxScanPaths) + "/a"}, "at most"},
		{"unknown action", "format-disk", nil, "unknown action"},
		{"empty action", "", nil, "unknown action"},
		{"action with newline", "scan\n", nil, "unknown action"},
		{"too many params", ActKillProcess, map[string]string{"a": "1", "b": "1", "c": "1", "d": "1", "e": "1", "f": "1", "g": "1", "h": "1", "i": "1"}, "at most"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := Validate(Request{CommandID: "c1", Action: tc.action, Params: tc.params})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("want an error containing %q, got valid", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			case err != nil && strings.ContainsAny(err.Error(), "\n\r\x00"):
				t.Fatalf("error is not one clean line: %q", err)
			}
		})
	}
	if err := Validate(Request{CommandID: "id\nforged", Action: ActReleaseHost}); err == nil {
		t.Error("a command id with a newline must be refused")
	}
}

func TestParsedValues(t *testing.T) {
	t.Parallel()
	p, err := parse(Request{Action: ActKillProcess, Params: map[string]string{"pid": "42", "start_time": "1700000000123"}})
	if err != nil || p.pid != 42 || p.start != 1700000000123 {
		t.Errorf("pid parse = %+v, %v", p, err)
	}
	p, err = parse(Request{Action: ActKillProcess, Params: map[string]string{"sha256": strings.Repeat("AB", 32)}})
	if err != nil || p.sha256 != strings.Repeat("ab", 32) {
		t.Errorf("sha256 must be lower-cased: %+v, %v", p, err)
	}
	p, err = parse(Request{Action: ActScan, Params: map[string]string{"paths": "/a,/b,/a"}})
	if err != nil || !slices.Equal(p.paths, []string{"/a", "/b"}) {
		t.Errorf("scan paths = %v, %v; want deduplicated", p.paths, err)
	}
}

// TestRunRefusesInvalidAndDoesNothing checks that a refused request leaves
// no trace: no state written, no quarantine entry.
func TestRunRefusesInvalidAndDoesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := New(Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, r := range []Request{
		{Action: "rm-rf"},
		{Action: ActQuarantineFile, Params: map[string]string{"path": "/etc/../etc/passwd"}},
		{Action: ActKillProcess, Params: map[string]string{"pid": "1", "name": "init"}},
		{Action: ActIsolateHost, Params: map[string]string{"x": "y"}},
	} {
		res := e.Run(context.Background(), r)
		if res.Status != StatusRefused || res.Detail == "" || len(res.Affected) != 0 {
			t.Errorf("%+v: got %+v, want refused with a reason", r, res)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "action", StateFile)); !os.IsNotExist(err) {
		t.Errorf("a refused request wrote state: %v", err)
	}
}

func TestIsolateRefusedWithoutCollector(t *testing.T) {
	t.Parallel()
	e, err := New(Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	res := e.Run(context.Background(), Request{Action: ActIsolateHost})
	if res.Status != StatusRefused {
		t.Fatalf("isolate without collector = %+v, want refused", res)
	}
}

func TestScanWithoutEngine(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	e, err := New(Options{StateDir: t.TempDir(), AllowedRoots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	res := e.Run(context.Background(), Request{Action: ActScan, Params: map[string]string{"paths": root}})
	if res.Status != StatusFailed || res.Detail != "scan: YARA not available" {
		t.Fatalf("scan without engine = %+v", res)
	}
}

func TestScanCallsEngineUnderRootsOnly(t *testing.T) {
	t.Parallel()
	root, outside := t.TempDir(), t.TempDir()
	f := filepath.Join(root, "a.bin")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got []string
	e, err := New(Options{StateDir: t.TempDir(), AllowedRoots: []string{root},
		Scan: func(_ context.Context, paths []string) ([]string, error) {
			got = paths
			return []string{f + ":test_rule"}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	res := e.Run(context.Background(), Request{Action: ActScan, Params: map[string]string{"paths": f}})
	if res.Status != StatusOK || !slices.Equal(res.Affected, []string{f + ":test_rule"}) || !slices.Equal(got, []string{f}) {
		t.Fatalf("scan = %+v (engine got %v)", res, got)
	}
	got = nil
	res = e.Run(context.Background(), Request{Action: ActScan, Params: map[string]string{"paths": f + "," + outside}})
	if res.Status != StatusRefused || got != nil {
		t.Fatalf("scan outside the roots = %+v (engine got %v), want refused and no scan", res, got)
	}
}

func TestUnitName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"teamviewerd": "teamviewerd.service", "x@1.service": "x@1.service", "level_agent": "level_agent.service",
		"../x": "", "-x": "", ".x": "", "a b": "", "x;rm": "", "a\nb": "", "": "",
	} {
		got, err := unitName(in)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("unitName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	got := oneLine("a\nb\rc\x00d\u2028e")
	if strings.ContainsAny(got, "\n\r\x00\u2028") {
		t.Errorf("oneLine left control characters: %q", got)
	}
	if n := len(oneLine(strings.Repeat("x", 5000))); n > 1100 {
		t.Errorf("oneLine did not bound the length: %d", n)
	}
}

func FuzzRequestValidation(f *testing.F) {
	seeds := [][5]string{
		{ActDisableRMM, "product", "teamviewer", "", ""},
		{ActDisableRMM, "product", "*", "", ""},
		{ActEnableRMM, "product", "../../etc", "", ""},
		{ActKillProcess, "pid", "1234", "start_time", "1700000000000"},
		{ActKillProcess, "pid", "1", "", ""},
		{ActKillProcess, "name", "sshd\x00", "", ""},
		{ActKillProcess, "sha256", strings.Repeat("f", 64), "", ""},
		{ActKillProcess, "path", "/opt/../../bin/sh", "name", "x"},
		{ActQuarantineFile, "path", "/srv/pos/evil.exe", "", ""},
		{ActQuarantineFile, "path", "/srv/pos/evil.exe\n/etc/shadow", "", ""},
		{ActQuarantineFile, "path", strings.Repeat("/a", 3000), "", ""},
		{ActQuarantineFile, "path", "/srv/\xff\xfe", "mode", "0777"},
		{ActIsolateHost, "", "", "", ""},
		{ActIsolateHost, "allow", "0.0.0.0/0", "", ""},
		{ActReleaseHost, "x", "y", "", ""},
		{ActScan, "paths", "/a,/b,,/c", "", ""},
		{ActScan, "paths", "/a,../b", "", ""},
		{"rm -rf /", "", "", "", ""},
		{"scan\n", "paths", "/a", "", ""},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, action, k1, v1, k2, v2 string) {
		params := map[string]string{}
		if k1 != "" {
			params[k1] = v1
		}
		if k2 != "" {
			params[k2] = v2
		}
		r := Request{CommandID: "fuzz", Action: action, Params: params}
		p, err := parse(r)
		if err != nil {
			if msg := err.Error(); strings.ContainsAny(msg, "\n\r\x00") || !utf8.ValidString(msg) {
				t.Fatalf("error is not one clean line: %q", msg)
			}
			return
		}
		keys, ok := allowedKeys[action]
		if !ok {
			t.Fatalf("unknown action %q accepted", action)
		}
		for k, v := range params {
			if !slices.Contains(keys, k) || v == "" || len(v) > maxValueLen {
				t.Fatalf("parameter %q=%q accepted for %s", k, v, action)
			}
		}
		okPath := func(s string) {
			if !filepath.IsAbs(s) || filepath.Clean(s) != s || !printable(s) || slices.Contains(strings.Split(s, "/"), "..") {
				t.Fatalf("path %q accepted", s)
			}
		}
		switch action {
		case ActDisableRMM, ActEnableRMM:
			if p.product != "*" && !productPattern.MatchString(p.product) {
				t.Fatalf("product %q accepted", p.product)
			}
		case ActKillProcess:
			n := 0
			for _, set := range []bool{p.pid != 0, p.name != "", p.sha256 != "", p.path != ""} {
				if set {
					n++
				}
			}
			if n != 1 || p.pid < 0 || p.pid > maxPID || p.start < 0 || (p.start != 0 && p.pid == 0) || (p.pid != 0 && p.start == 0) {
				t.Fatalf("kill-process params %+v accepted", p)
			}
			if p.name != "" && (strings.ContainsAny(p.name, "/\x00\n") || p.name == "..") {
				t.Fatalf("name %q accepted", p.name)
			}
			if p.path != "" {
				okPath(p.path)
			}
		case ActQuarantineFile:
			okPath(p.path)
		case ActScan:
			if len(p.paths) == 0 || len(p.paths) > maxScanPaths {
				t.Fatalf("scan paths %v accepted", p.paths)
			}
			for _, s := range p.paths {
				okPath(s)
			}
		case ActIsolateHost, ActReleaseHost:
			if len(params) != 0 {
				t.Fatalf("%s accepted params %v", action, params)
			}
		}
	})
}
