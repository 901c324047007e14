package rmmchain

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func asNobody(t *testing.T, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody %v: %v: %s", argv, err, out)
	}
}

// A user who owns the folder the rmm-chain simulation was set up in
// replaces its manifest with one listing a root-only file elsewhere: the
// undo, run as root, must not delete it.
func TestRMMChainUndoDeletesPathFromForgedManifest(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as an unprivileged user")
	}
	t.Parallel()
	base, err := os.MkdirTemp("", "rmmchain-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "shop")
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "tillwatch.yaml")
	if err := os.WriteFile(victim, []byte("root's config"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(Options{Dir: dir, Pause: 10 * time.Millisecond, Hold: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(Manifest{Dir: dir, Created: []Entry{{Path: victim, Kind: KindFile, By: "simulator"}}})
	src := filepath.Join(base, "forged.json")
	if err := os.WriteFile(src, forged, 0o644); err != nil {
		t.Fatal(err)
	}
	asNobody(t, "rm", "-f", filepath.Join(dir, ManifestName))
	asNobody(t, "cp", src, filepath.Join(dir, ManifestName))
	if _, err := Undo(dir); err == nil {
		t.Error("undo trusted a manifest the user wrote")
	}
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("root deleted a file the user's manifest listed: %v", err)
	}
}

// Even its own manifest only makes the undo delete what the simulation can
// have created: a path outside DIR/tillwatch-rmm-chain and the agent
// directories is left alone.
func TestRMMChainUndoOnlyDeletesWhatItCreated(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "keep")
	if err := os.WriteFile(victim, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(Manifest{Dir: dir, Created: []Entry{
		{Path: victim, Kind: KindFile, By: "simulator"},
		{Path: filepath.Dir(victim), Kind: KindDir, By: "simulator"},
	}})
	if err := os.WriteFile(filepath.Join(dir, ManifestName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Undo(dir); err == nil {
		t.Error("undo reported success with paths outside the simulation")
	}
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("undo deleted %s: %v", victim, err)
	}
}
