//go:build cgo

package yara

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCommunitySets loads fixtures written in the layouts of public sets
// (testdata/community/yara): Yara-Rules-style index files whose lists
// overlap, and signature-base-style filetype conditions, and scans real
// files with them.
func TestCommunitySets(t *testing.T) {
	t.Parallel()
	dir := "testdata/community"
	srcs, err := LoadPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Compile(srcs)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	var names []string
	for _, m := range r.Infos() {
		names = append(names, m.Rule)
	}
	slices.Sort(names)
	if want := []string{"TW_Test_Cloaked_As_JPG", "TW_Test_Fake_Loader", "TW_Test_Fake_Webshell", "TW_Test_IsPE", "TW_Test_PHP_Anywhere"}; !slices.Equal(names, want) {
		t.Errorf("rules %v, want %v", names, want)
	}
	// Lint: imported rules without id/severity are warnings, nothing
	// fails.
	ps, err := Lint(dir)
	if err != nil {
		t.Fatal(err)
	}
	warned := false
	for _, p := range ps {
		if !strings.Contains(p.Reason, "warning: ") {
			t.Errorf("lint problem on imported rules: %s", p)
		}
		warned = warned || strings.Contains(p.Reason, "warning: convention: rule TW_Test_Fake_Loader: meta id is required")
	}
	if !warned {
		t.Errorf("no convention warning for the rule without id: %v", ps)
	}
	if ps, err := TestSamples(dir); err != nil || len(ps) > 0 {
		t.Errorf("imported rules need no samples: %v %v", ps, err)
	}

	tmp := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		file, body string
		want       []string
	}{
		{"logo.jpg", "\n<?php system($_GET['c']); ?>", []string{"TW_Test_Cloaked_As_JPG", "TW_Test_PHP_Anywhere"}},
		{"index.php", "<?php echo 1; ?>", nil},
		{"photo.jpg", "\xff\xd8\xff\xe0 real jpeg", nil},
		{"photo2.jpg", "MZ\x90\x00 tillwatch-test-loader-marker", []string{"TW_Test_Cloaked_As_JPG", "TW_Test_Fake_Loader"}},
		{"run.jpeg", "#!/usr/bin/env python3\nprint(1)\n", []string{"TW_Test_Cloaked_As_JPG"}},
		{"shell.txt", "x tillwatch_test_eval_marker", []string{"TW_Test_Fake_Webshell"}},
	}
	for _, tc := range tests {
		p := write(tc.file, tc.body)
		var got []string
		ms, err := r.ScanFile(p, FileExternals(p, []byte(tc.body)[:min(len(tc.body), HeadSize)], "root"), DefaultTimeout)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			got = append(got, m.Rule)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: matched %v, want %v", tc.file, got, tc.want)
		}
	}
}

// TestLintOwnRulesStrict: the same rule without meta is an error when it
// is one of our own (directly in the yara folder).
func TestLintOwnRulesStrict(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "yara"), 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/community/yara/yararules-style/webshells/fake_webshell.yar")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "yara", "mine.yar"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	ps, err := Lint(dir)
	if err != nil || len(ps) == 0 {
		t.Fatalf("lint = %v, %v", ps, err)
	}
	for _, p := range ps {
		if strings.Contains(p.Reason, "warning: ") {
			t.Errorf("own rule problem reported as a warning: %s", p)
		}
	}
	ps, _ = TestSamples(dir)
	if len(ps) != 2 || !strings.Contains(ps[0].Reason, "no positive samples") {
		t.Errorf("own rule without samples: %v", ps)
	}
}
