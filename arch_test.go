package tillwatch_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tillwatch/tillwatch/"

// archRow is one row of ARCHITECTURE.md's import table.
type archRow struct {
	line     int
	packages []string // patterns: "x" or "x/*"
	allow    []string // patterns; nil with anything false means nothing
	anything bool
}

var backticked = regexp.MustCompile("`([^`]+)`")

// parseArchTable reads the table under "## Packages and what they may import".
func parseArchTable(t *testing.T, doc []byte) []archRow {
	t.Helper()
	var rows []archRow
	in := false
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if strings.HasPrefix(l, "## ") {
			in = l == "## Packages and what they may import"
			continue
		}
		if !in || !strings.HasPrefix(l, "| `") {
			continue
		}
		cols := strings.Split(strings.Trim(l, "|"), " | ")
		if len(cols) < 2 {
			t.Fatalf("ARCHITECTURE.md:%d: a row needs a package and a may-import column", n)
		}
		r := archRow{line: n}
		for _, m := range backticked.FindAllStringSubmatch(cols[0], -1) {
			r.packages = append(r.packages, m[1])
		}
		switch allow := strings.TrimSpace(cols[1]); allow {
		case "anything":
			r.anything = true
		case "nothing":
		default:
			for _, m := range backticked.FindAllStringSubmatch(allow, -1) {
				r.allow = append(r.allow, m[1])
			}
			if len(r.allow) == 0 {
				t.Fatalf("ARCHITECTURE.md:%d: may-import column %q is neither patterns, nothing nor anything", n, allow)
			}
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		t.Fatal("ARCHITECTURE.md: no import table found")
	}
	return rows
}

// matches reports whether pkg matches pattern and how specifically:
// an exact name beats any wildcard, a longer wildcard prefix a shorter.
func matches(pattern, pkg string) (bool, int) {
	if prefix, ok := strings.CutSuffix(pattern, "/*"); ok {
		return strings.HasPrefix(pkg, prefix+"/"), len(prefix)
	}
	return pattern == pkg, 1 << 20
}

// rowFor returns the most specific row naming pkg.
func rowFor(rows []archRow, pkg string) (archRow, bool) {
	best, bestScore := archRow{}, -1
	for _, r := range rows {
		for _, p := range r.packages {
			if ok, score := matches(p, pkg); ok && score > bestScore {
				best, bestScore = r, score
			}
		}
	}
	return best, bestScore >= 0
}

// moduleImports lists every package of the module with its non-test imports
// inside the module, for the OSes the sensor builds for.
func moduleImports(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, goos := range []string{"linux", "windows", "darwin"} {
		cmd := exec.Command("go", "list", "-e", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
		cmd.Env = append(os.Environ(), "GOOS="+goos)
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list (GOOS=%s): %v", goos, err)
		}
		for l := range strings.Lines(string(b)) {
			f := strings.Fields(l)
			if len(f) == 0 || !strings.HasPrefix(f[0], module) {
				continue
			}
			pkg := strings.TrimPrefix(f[0], module)
			if _, ok := out[pkg]; !ok {
				out[pkg] = nil
			}
			for _, imp := range f[1:] {
				if rel, ok := strings.CutPrefix(imp, module); ok && !slices.Contains(out[pkg], rel) {
					out[pkg] = append(out[pkg], rel)
				}
			}
		}
	}
	return out
}

// TestImportsFollowArchitecture keeps the import table of
// docs/ARCHITECTURE.md true: every package of the module has a row, and
// imports only what its row allows.
func TestImportsFollowArchitecture(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list three times")
	}
	doc, err := os.ReadFile("docs/ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := parseArchTable(t, doc)
	pkgs := moduleImports(t)
	for _, r := range rows {
		for _, p := range r.packages {
			found := false
			for pkg := range pkgs {
				if ok, _ := matches(p, pkg); ok {
					found = true
				}
			}
			if !found {
				t.Errorf("ARCHITECTURE.md:%d names %s, which is no package of the module", r.line, p)
			}
		}
	}
	for pkg, imports := range pkgs {
		r, ok := rowFor(rows, pkg)
		if !ok {
			t.Errorf("%s has no row in docs/ARCHITECTURE.md's import table; add one saying what it may import", pkg)
			continue
		}
		if r.anything {
			continue
		}
		for _, imp := range imports {
			allowed := false
			for _, a := range r.allow {
				if ok, _ := matches(a, imp); ok {
					allowed = true
				}
			}
			if !allowed {
				t.Errorf("%s imports %s, which its row (ARCHITECTURE.md:%d) does not allow", pkg, imp, r.line)
			}
		}
	}
}

// TestArchTableMatching pins the matching rules the table relies on.
func TestArchTableMatching(t *testing.T) {
	t.Parallel()
	rows := []archRow{
		{packages: []string{"sensor/detect/*"}, allow: []string{"sensor/alert"}},
		{packages: []string{"sensor/detect/rmm"}, allow: []string{"sensor/rmm"}},
		{packages: []string{"sensor/*"}, anything: true},
	}
	for _, tc := range []struct {
		pkg, want string
	}{
		{"sensor/detect/yara", "sensor/alert"},
		{"sensor/detect/rmm", "sensor/rmm"},
		{"sensor/agent", ""},
	} {
		r, ok := rowFor(rows, tc.pkg)
		if !ok {
			t.Fatalf("%s: no row", tc.pkg)
		}
		if got := strings.Join(r.allow, ","); got != tc.want {
			t.Errorf("%s: row allows %q, want %q", tc.pkg, got, tc.want)
		}
	}
	if ok, _ := matches("internal/*", "internal"); ok {
		t.Error("internal/* matched internal itself")
	}
}
