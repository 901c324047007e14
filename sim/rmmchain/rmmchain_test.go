package rmmchain

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/rules"
	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// The stand-in must be what the detector recognises: the agent's name and
// its real install path both belong to Product in the built-in catalog.
func TestAgentIsCatalogued(t *testing.T) {
	t.Parallel()
	c, err := rmmcat.LoadCatalog(rules.Builtin, "rmm")
	if err != nil {
		t.Fatal(err)
	}
	m := rmmcat.NewMatcher(c, "linux")
	if p, by := m.Process(AgentName, "/tmp/x/"+RootName+"/opt/kaseya/"+AgentName); p == nil || p.ID != Product || by != rmmcat.ByName {
		t.Errorf("agent under --dir: %v by %q, want %s by name", p, by, Product)
	}
	if p, by := m.Process(AgentName, InstallRoot+"tillwatch-sim-1/"+AgentName); p == nil || p.ID != Product || by != rmmcat.ByPath {
		t.Errorf("agent under the install root: %v by %q, want %s by install path", p, by, Product)
	}
}

func listing(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

func TestRunWritesMarkerAndUndoRemovesExactlyWhatItCreated(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the stand-ins are Linux programs")
	}
	dir := t.TempDir()
	install := filepath.Join(t.TempDir(), "opt", "kaseya") // stands in for the real install root
	keep := filepath.Join(dir, "keep.txt")
	if err := os.WriteFile(keep, []byte("not ours"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, beforeInstall := listing(t, dir), listing(t, filepath.Dir(filepath.Dir(install)))

	m, err := Create(Options{Dir: dir, InstallRoot: install, Pause: 10 * time.Millisecond, Hold: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Agent, install+string(os.PathSeparator)+"tillwatch-sim-") {
		t.Errorf("agent %s not in a new subdirectory of %s", m.Agent, install)
	}
	if _, err := Create(Options{Dir: dir}); err == nil {
		t.Error("a second set-up in the same directory was not refused")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, m, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case res.ProcedureStatus > 128 && !res.MarkerWritten:
		// An enforcing tillwatch sensor on this host (CI runs e2e suites
		// beside this one) did its job; undo must still clean up.
		t.Logf("the chain was killed (status %d): a sensor runs on this host", res.ProcedureStatus)
	case !res.MarkerWritten || res.ProcedureStatus != 0:
		t.Fatalf("unobstructed run: %+v", res)
	}
	// Everything the chain created was announced in the manifest.
	listed := map[string]bool{}
	for _, e := range m.Created {
		listed[e.Path] = true
	}
	for _, f := range []string{"cert", "agent.sh", MarkerName} {
		if p := filepath.Join(m.WorkDir, f); !listed[p] {
			t.Errorf("%s created by the chain but not in the manifest", p)
		}
	}

	// Something foreign inside a created directory is left alone, and so is
	// that directory; a second undo finishes once it is gone.
	foreign := filepath.Join(m.WorkDir, "foreign")
	if err := os.WriteFile(foreign, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Undo(dir); err == nil {
		t.Error("undo reported success with a foreign file in a created directory")
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("undo touched a file it did not create: %v", err)
	}
	if err := os.Remove(foreign); err != nil {
		t.Fatal(err)
	}
	if _, err := Undo(dir); err != nil {
		t.Fatal(err)
	}
	if got := listing(t, dir); got != before {
		t.Errorf("after undo:\n%s\nwant:\n%s", got, before)
	}
	if got := listing(t, filepath.Dir(filepath.Dir(install))); got != beforeInstall {
		t.Errorf("install root after undo:\n%s\nwant:\n%s", got, beforeInstall)
	}
}

func TestUndoWithoutSetUpFails(t *testing.T) {
	t.Parallel()
	if _, err := Undo(t.TempDir()); err == nil || !strings.Contains(err.Error(), "has no manifest") {
		t.Errorf("got %v", err)
	}
}
