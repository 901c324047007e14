package ransomware

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

const nobody = 65534

func asNobody(t *testing.T, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody %v: %v: %s", argv, err, out)
	}
}

// userFolder is a folder the unprivileged user nobody owns, with one file,
// where root runs the simulator; secret is a root-only file elsewhere.
func userFolder(t *testing.T) (dir, secret string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as an unprivileged user")
	}
	base, err := os.MkdirTemp("", "sim-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dir = filepath.Join(base, "shop")
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sales.csv"), bytes.Repeat([]byte("1,2,3\n"), 2000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	secret = filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secret, []byte("root:$6$secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, secret
}

func unchanged(t *testing.T, secret string) {
	t.Helper()
	if b, err := os.ReadFile(secret); err != nil || string(b) != "root:$6$secret\n" {
		t.Fatalf("root changed a file outside the folder through the user's link: %.40q %v", b, err)
	}
}

// A user swaps a marked file for a symlink to a root-only file before the
// encryption pass: root must not encrypt the link's target.
func TestSimulatorEncryptsThroughUserSymlink(t *testing.T) {
	t.Parallel()
	dir, secret := userFolder(t)
	m, err := Mark(dir)
	if err != nil {
		t.Fatal(err)
	}
	asNobody(t, "rm", "-f", filepath.Join(dir, "sales.csv"))
	asNobody(t, "ln", "-s", secret, filepath.Join(dir, "sales.csv"))
	if _, err := Encrypt(dir, m, Options{Mode: ModeInPlace}); err != nil {
		t.Logf("encrypt: %v", err)
	}
	unchanged(t, secret)
}

// A user swaps a marked file for a symlink before the undo: root must not
// write the restored content through it.
func TestSimulatorUndoWritesThroughUserSymlink(t *testing.T) {
	t.Parallel()
	dir, secret := userFolder(t)
	m, err := Mark(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Encrypt(dir, m, Options{Mode: ModeInPlace}); err != nil {
		t.Fatal(err)
	}
	asNobody(t, "rm", "-f", filepath.Join(dir, "sales.csv"))
	asNobody(t, "ln", "-s", secret, filepath.Join(dir, "sales.csv"))
	if _, err := Undo(dir); err != nil {
		t.Logf("undo: %v", err)
	}
	unchanged(t, secret)
	if fi, err := os.Lstat(filepath.Join(dir, "sales.csv")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("undo did not restore the file in place of the link: %v %v", fi, err)
	}
}

// A user replaces the manifest with one naming a root-only file as a
// "copy" (a digest that climbs out of the copies folder) and a file of
// theirs as its destination: root must not copy the secret into the folder.
func TestSimulatorUndoCopiesRootFileIntoFolderFromForgedManifest(t *testing.T) {
	t.Parallel()
	dir, secret := userFolder(t)
	if _, err := Mark(dir); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(filepath.Join(dir, BackupDir), secret)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(Manifest{Dir: dir, Key: "00", Files: []Entry{{Path: "stolen.txt", SHA256: rel}}})
	src := filepath.Join(filepath.Dir(dir), "forged.json")
	if err := os.WriteFile(src, forged, 0o644); err != nil {
		t.Fatal(err)
	}
	asNobody(t, "rm", "-f", filepath.Join(dir, ManifestName))
	asNobody(t, "cp", src, filepath.Join(dir, ManifestName))
	if _, err := Undo(dir); err == nil {
		t.Error("undo trusted a manifest the user wrote")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "stolen.txt")); err == nil {
		t.Fatalf("root copied a root-only file into the user's folder: %q", b)
	}
}

// --dir / or /etc is refused before anything is written.
func TestSimulatorRefusesSystemFolders(t *testing.T) {
	t.Parallel()
	for _, d := range []string{"/", "/etc", "/usr/bin", "/var", "/root"} {
		if _, err := Mark(d); err == nil {
			os.RemoveAll(filepath.Join(d, BackupDir))
			os.Remove(filepath.Join(d, ManifestName))
			t.Errorf("Mark(%s) accepted a system folder", d)
		}
		if _, err := Undo(d); err == nil {
			t.Errorf("Undo(%s) accepted a system folder", d)
		}
		if _, err := os.Lstat(filepath.Join(d, BackupDir)); err == nil {
			t.Errorf("%s gained %s", d, BackupDir)
		}
	}
}
