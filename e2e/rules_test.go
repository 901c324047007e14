package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestRulesLintAndTest runs the rule author's workflow on the shipped rule
// tree (it must pass) and on a broken copy (it must fail naming file:line).
func TestRulesLintAndTest(t *testing.T) {
	rulesDir := filepath.Join(repoRoot(t), "rules")
	for _, mode := range []string{"lint", "test"} {
		r := run(t, "tillwatch", "rules", mode, rulesDir)
		if r.code != 0 {
			t.Errorf("rules %s on the shipped rules: exit %d\n%s%s", mode, r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "yara: ok") || !strings.Contains(r.stdout, "exec: ok") {
			t.Errorf("rules %s does not report each kind: %q", mode, r.stdout)
		}
	}
	broken := t.TempDir()
	if err := os.MkdirAll(filepath.Join(broken, "yara"), 0o755); err != nil {
		t.Fatal(err)
	}
	bad := "rule ok { condition: true }\n\nrule broken {\n  strings: $a = \"x\"\n  condition: $b\n}\n"
	if err := os.WriteFile(filepath.Join(broken, "yara", "broken.yar"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, "tillwatch", "rules", "lint", broken)
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, "broken.yar:") {
		t.Errorf("lint of a broken rule: exit %d, output %q %q; want exit 1 naming broken.yar:LINE", r.code, r.stdout, r.stderr)
	}
}

// TestScan runs `tillwatch scan` over a folder holding a harmless positive
// sample and a negative one.
func TestScan(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	pos, _ := filepath.Glob(filepath.Join(root, "rules", "yara", "tests", "ransom_note", "positive", "*"))
	neg, _ := filepath.Glob(filepath.Join(root, "rules", "yara", "tests", "ransom_note", "negative", "*"))
	if len(pos) == 0 || len(neg) == 0 {
		t.Fatal("ransom_note samples missing")
	}
	for i, src := range []string{pos[0], neg[0]} {
		raw, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, []string{"positive.txt", "negative.txt"}[i]), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The compiled set is cached in a folder of the test's own: written by
	// the first scan, loaded by the second.
	cache := t.TempDir()
	r := run(t, "tillwatch", "scan", "--cache-dir", cache, "--json", dir)
	if r.code != 0 {
		t.Fatalf("scan: exit %d %s", r.code, r.stderr)
	}
	if es, _ := filepath.Glob(filepath.Join(cache, "yara-*.rules")); len(es) != 1 {
		t.Errorf("cache entries after the first scan: %v", es)
	}
	lines := jsonLines(t, r.stdout)
	if len(lines) == 0 {
		t.Fatalf("no match on the positive sample: %q", r.stdout)
	}
	for _, l := range lines {
		if get(l, "file.path") != filepath.Join(dir, "positive.txt") || get(l, "rule.ruleset") != "yara" || get(l, "rule.name") == nil {
			t.Errorf("match %v: want only positive.txt, ruleset yara, a rule name", l)
		}
	}
	plain := run(t, "tillwatch", "scan", "--cache-dir", cache, dir)
	if plain.code != 0 || !strings.Contains(plain.stdout, "positive.txt\t") || strings.Contains(plain.stdout, "negative.txt") {
		t.Errorf("plain scan output %q", plain.stdout)
	}
	if missing := run(t, "tillwatch", "scan", "--no-cache", filepath.Join(dir, "nope")); missing.code == 0 {
		t.Errorf("scanning a missing path must fail, got exit 0")
	}
}
