package enrich

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

func TestEnrichAddsHashesAndAncestry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "note.txt")
	content := []byte("pay up")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)

	now := time.Now()
	table := proctree.New(proctree.Options{})
	table.Upsert(proctree.Proc{PID: 100, PPID: 1, Name: "agentmon", Executable: "/opt/agent/agentmon", Start: now.Add(-time.Hour)})
	table.Upsert(proctree.Proc{PID: 200, PPID: 100, Name: "sh", Executable: "/bin/sh", Start: now.Add(-time.Minute)})
	table.Upsert(proctree.Proc{PID: 300, PPID: 200, Name: "payload", Executable: "/dev/shm/p", Start: now})
	table.Exit(200, now, 0) // the shell already exited

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a := &event.Event{
		Process: &event.Process{PID: 300, Name: "payload", Executable: self},
		File:    &event.File{Path: file},
	}
	// procRoot points nowhere, so the executable is hashed from its path.
	New(table, t.TempDir(), nil).Enrich(a)

	if a.File.Hash == nil || a.File.Hash.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("file hash = %+v", a.File.Hash)
	}
	if a.Process.Hash == nil || len(a.Process.Hash.SHA256) != 64 {
		t.Errorf("process hash = %+v", a.Process.Hash)
	}
	anc := a.Tillwatch.Process.Ancestry
	if len(anc) < 2 || anc[0].PID != 200 || !anc[0].Exited || anc[1].Name != "agentmon" {
		t.Fatalf("ancestry = %+v, want sh (exited) then agentmon", anc)
	}
	if a.Process.Parent == nil || a.Process.Parent.Name != "sh" {
		t.Errorf("parent filled from the table = %+v", a.Process.Parent)
	}
}

func TestHashRefusesNonRegularAndOversized(t *testing.T) {
	t.Parallel()
	e := New(nil, "", nil)
	if _, err := e.hash(t.TempDir()); err == nil {
		t.Error("a directory must not be hashed")
	}
	big := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxHashSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := e.hash(big); err == nil {
		t.Error("a file over the limit must not be hashed")
	}
}
