package rmm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
)

func builtin(t *testing.T) *Catalog {
	t.Helper()
	c, err := LoadCatalog(rules.Builtin, "rmm")
	if err != nil {
		t.Fatalf("built-in catalog does not load: %v", err)
	}
	return c
}

func TestBuiltinCatalog(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	if len(c.Products) < 60 {
		t.Errorf("catalog has %d products, want at least 60", len(c.Products))
	}
	// The products the issue names must be there.
	for _, id := range []string{"kaseya-vsa", "connectwise-automate", "screenconnect", "n-able-ncentral", "ninjaone", "atera",
		"datto-rmm", "syncro", "action1", "simplehelp", "pulseway", "level", "tactical-rmm", "meshcentral", "teamviewer",
		"anydesk", "splashtop", "rustdesk", "goto-resolve", "zoho-assist"} {
		if _, ok := c.Product(id); !ok {
			t.Errorf("catalog lacks %s", id)
		}
	}
	linux := 0
	for _, p := range c.Products {
		if p.Linux != nil {
			linux++
		}
	}
	if linux < 40 {
		t.Errorf("only %d products recognisable on Linux", linux)
	}
}

func TestLoadCatalogReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := LoadCatalog(os.DirFS("testdata/bad"), ".")
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{`id "Bad_ID"`, "name is required", `kind "rat"`, "bare file name", "not absolute for linux",
		"not absolute for windows", "product no-os: at least one of", `name "dup" already used`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	typo := fstest.MapFS{"rmm/catalog.yaml": {Data: []byte("products:\n  - id: x1\n    nmae: typo\n")}}
	if _, err := LoadCatalog(typo, "rmm"); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Errorf("unknown key must be an error naming it, got %v", err)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	got, err := c.Resolve([]string{"tactical-rmm", "KASEYA", "labtech"})
	if err != nil || !got["tactical-rmm"] || !got["kaseya-vsa"] || !got["connectwise-automate"] {
		t.Errorf("Resolve = %v, %v", got, err)
	}
	if _, err := c.Resolve([]string{"tactical-rmm", "teamvewer", "nosuch"}); err == nil || !strings.Contains(err.Error(), "teamvewer, nosuch") {
		t.Errorf("unknown names must all be reported, got %v", err)
	}
}

func TestMatcher(t *testing.T) {
	t.Parallel()
	c := builtin(t)
	tests := []struct {
		name, goos, proc, exe, want, by string
	}{
		{"linux by path", OSLinux, "x", "/opt/teamviewer/tv_bin/teamviewerd", "teamviewer", ByPath},
		{"linux by name", OSLinux, "anydesk", "/home/u/Downloads/anydesk", "anydesk", ByName},
		{"linux exe base name wins over comm", OSLinux, "sh", "/tmp/x/tacticalagent", "tactical-rmm", ByName},
		{"linux unrelated", OSLinux, "bash", "/usr/bin/bash", "", ""},
		{"linux traversal does not pass as install path", OSLinux, "x", "/opt/teamviewer/../../usr/bin/x", "", ""},
		{"windows path case-insensitive", OSWindows, "", `c:\program files (x86)\kaseya\abc\agentmon.exe`, "kaseya-vsa", ByPath},
		{"windows name", OSWindows, "", `D:\x\ScreenConnect.ClientService.exe`, "screenconnect", ByName},
		{"windows name not on linux", OSLinux, "ateraagent.exe", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := NewMatcher(c, tc.goos)
			p, by := m.Process(tc.proc, tc.exe)
			got := ""
			if p != nil {
				got = p.ID
			}
			if got != tc.want || by != tc.by {
				t.Errorf("Process(%q, %q) = %q by %q, want %q by %q", tc.proc, tc.exe, got, by, tc.want, tc.by)
			}
		})
	}
	if p := NewMatcher(c, OSLinux).Service("teamviewerd.service"); p == nil || p.ID != "teamviewer" {
		t.Errorf("service match failed: %v", p)
	}
}

func TestBaseline(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b, err := OpenBaseline(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := b.Check("p", "/opt/p/agent", "aaa", 3); v != VerdictNew || err != nil {
		t.Fatalf("first sight: %s %v", v, err)
	}
	if v, _, _ := b.Check("p", "/opt/p/agent", "aaa", 3); v != VerdictSame {
		t.Errorf("same digest: %s", v)
	}
	v, prev, _ := b.Check("p", "/opt/p/agent", "bbb", 3)
	if v != VerdictChanged || prev.SHA256 != "aaa" {
		t.Errorf("changed digest: %s %+v", v, prev)
	}
	// A restart must remember the baseline, not the tampered digest.
	b2, err := OpenBaseline(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, _, _ := b2.Check("p", "/opt/p/agent", "bbb", 3); v != VerdictChanged {
		t.Errorf("after reopen: %s, want changed", v)
	}
	if err := b2.Accept("p", "/opt/p/agent", "bbb", 3, "update"); err != nil {
		t.Fatal(err)
	}
	b3, _ := OpenBaseline(dir, nil)
	if e, ok := b3.Get("/opt/p/agent"); !ok || e.SHA256 != "bbb" || e.Reason != "update" {
		t.Errorf("accepted entry not persisted: %+v", e)
	}
	fi, err := os.Stat(filepath.Join(dir, BaselineFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("baseline file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if err := os.WriteFile(filepath.Join(dir, BaselineFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBaseline(dir, nil); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("a corrupt baseline must be an error, got %v", err)
	}
	// JSON null is no map at all: an empty baseline that records.
	if err := os.WriteFile(filepath.Join(dir, BaselineFile), []byte("null"), 0o600); err != nil {
		t.Fatal(err)
	}
	b4, err := OpenBaseline(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := b4.Check("p", "/opt/p/agent", "ccc", 3); v != VerdictNew || err != nil {
		t.Errorf("first sight in a null baseline: %s %v", v, err)
	}
}

func TestHashFile(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(f, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, n, err := HashFile(nil, f)
	if err != nil || n != 3 || sum != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("HashFile = %s %d %v", sum, n, err)
	}
	if _, _, err := HashFile(nil, filepath.Dir(f)); err == nil {
		t.Error("a directory must not hash")
	}
}

func TestScannerFindsInstalledFiles(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mk := func(p string, mode os.FileMode) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	mk("/opt/teamviewer/tv_bin/teamviewerd", 0o755)
	mk("/opt/teamviewer/doc/readme.txt", 0o644) // not executable: not reported
	mk("/usr/bin/anydesk", 0o755)
	mk("/etc/systemd/system/rustdesk.service", 0o644)
	if err := os.Symlink("/usr/bin", filepath.Join(root, "opt/teamviewer/link")); err != nil {
		t.Fatal(err)
	}
	s := &Scanner{Matcher: NewMatcher(builtin(t), OSLinux), Root: root}
	var got []string
	n, cut := s.Scan(context.Background(), func(ev event.Event) {
		if ev.Event.Dataset != event.DatasetFile || ev.Event.Action != ActionScanFound {
			t.Errorf("unexpected event %+v", ev.Event)
		}
		got = append(got, ev.File.Path)
	})
	want := map[string]bool{"/opt/teamviewer/tv_bin/teamviewerd": true, "/usr/bin/anydesk": true, "/etc/systemd/system/rustdesk.service": true}
	if n != len(want) || cut {
		t.Errorf("scan found %d (cut %v): %v", n, cut, got)
	}
	for _, g := range got {
		if !want[g] {
			t.Errorf("unexpected finding %s", g)
		}
	}
	s.MaxFiles = 1
	if n, cut := s.Scan(context.Background(), func(event.Event) {}); n != 1 || !cut {
		t.Errorf("bounded scan: %d %v", n, cut)
	}
}

func TestScannerRunStopsWithContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	scans := make(chan int, 10)
	s := &Scanner{Matcher: NewMatcher(builtin(t), OSLinux), Root: t.TempDir(), Interval: 10 * time.Millisecond,
		OnScan: func(n int, _ bool) { scans <- n }}
	done := make(chan error)
	go func() { done <- s.Run(ctx, func(event.Event) {}) }()
	<-scans
	<-scans
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}
