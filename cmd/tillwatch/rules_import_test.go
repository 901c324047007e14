package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/rulebundle"
	"github.com/tillwatch/tillwatch/rules"
	sigmadetect "github.com/tillwatch/tillwatch/sensor/detect/sigma"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// TestImportCommunityContent runs `rules import sigma` and `rules import
// lolrmm` on fixtures in the published layouts, then checks that the
// folder written passes `rules test`, loads with the sensor's loaders on
// top of the built-in rules, and packs into a signed bundle.
func TestImportCommunityContent(t *testing.T) {
	t.Parallel()
	out := t.TempDir()
	var buf bytes.Buffer
	root := newRoot(&buf, &buf)
	root.SetArgs([]string{"rules", "import", "sigma", "../../sensor/detect/sigma/testdata/community/sigma", "--out", out, "--name", "community"})
	if err := root.Execute(); err != nil {
		t.Fatalf("import sigma: %v\n%s", err, buf.String())
	}
	if !strings.Contains(buf.String(), "sigma import: 6 rule files: 4 taken") || !strings.Contains(buf.String(), "not-applicable:     1  logsource service auditd") {
		t.Errorf("sigma import output:\n%s", buf.String())
	}
	// Taken files are copied unedited.
	src, _ := os.ReadFile("../../sensor/detect/sigma/testdata/community/sigma/rules/linux/process_creation/proc_creation_lnx_every_key.yml")
	dst, err := os.ReadFile(filepath.Join(out, "sigma/community/rules/linux/process_creation/proc_creation_lnx_every_key.yml"))
	if err != nil || !bytes.Equal(src, dst) {
		t.Errorf("taken rule not copied unedited: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "sigma/community/rules/linux/auditd/lnx_auditd_service.yml")); !os.IsNotExist(err) {
		t.Errorf("a not-applicable rule was copied: %v", err)
	}
	if rep, err := os.ReadFile(filepath.Join(out, "import-sigma-community.txt")); err != nil || !strings.Contains(string(rep), "not-applicable\trules/linux/auditd/lnx_auditd_service.yml\tlogsource service auditd") {
		t.Errorf("report: %v\n%s", err, rep)
	}

	buf.Reset()
	root = newRoot(&buf, &buf)
	root.SetArgs([]string{"rules", "import", "lolrmm", "../../sensor/rmm/testdata/lolrmm", "--out", out})
	if err := root.Execute(); err != nil {
		t.Fatalf("import lolrmm: %v\n%s", err, buf.String())
	}
	if !strings.Contains(buf.String(), "lolrmm import: 5 tools: 2 taken") || !strings.Contains(buf.String(), "(1 with Linux recognisers)") {
		t.Errorf("lolrmm import output:\n%s", buf.String())
	}

	// rules test passes on what was written.
	buf.Reset()
	if err := runRules(&buf, out, true); err != nil {
		t.Fatalf("rules test: %v\n%s", err, buf.String())
	}
	// The sensor's loaders take it on top of the built-in rules.
	rs, ps := sigmadetect.LoadAll(rules.Builtin, "sigma", []string{out})
	if err := sigmadetect.Errors(ps); err != nil || sigmadetect.New(rs, "linux").Rules() != 3+3 {
		t.Errorf("sigma load: %v, %d linux rules", err, sigmadetect.New(rs, "linux").Rules())
	}
	cat, err := rmm.LoadCatalog(rules.Builtin, "rmm")
	if err != nil {
		t.Fatal(err)
	}
	more, err := rmm.LoadCatalog(os.DirFS(filepath.Join(out, "rmm")), ".")
	if err != nil || cat.Merge(more) != nil {
		t.Fatalf("catalog: %v", err)
	}
	if _, ok := cat.Product("shellbridge-agent"); !ok {
		t.Error("imported product not in the merged catalog")
	}
	// And it packs into a signed bundle (the report files stay out).
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, m, err := rulebundle.Build(out, 7, "community", priv, time.Now())
	if err != nil || m.Files != 4+1 {
		t.Errorf("bundle: %v, %d files", err, m.Files)
	}

	// Bad input: one line, nothing written.
	root = newRoot(&buf, &buf)
	root.SetArgs([]string{"rules", "import", "sigma", "/nonexistent", "--out", out})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "is not a folder") {
		t.Errorf("missing source: %v", err)
	}
}
