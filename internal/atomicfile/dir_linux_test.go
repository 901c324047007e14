package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestDirWriteReplacesLinkNotTarget(t *testing.T) {
	t.Parallel()
	dir, other := t.TempDir(), t.TempDir()
	target := filepath.Join(other, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.ReadRegular("f", 100); err == nil {
		t.Error("ReadRegular followed a symlink")
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadRegular("fifo", 100); !errors.Is(err, ErrNotRegular) {
		t.Errorf("ReadRegular on a FIFO: %v, want ErrNotRegular", err)
	}
	if err := d.Write("f", []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("target overwritten: %q", b)
	}
	if b, err := d.ReadRegular("f", 100); err != nil || string(b) != "new" {
		t.Errorf("read back %q %v", b, err)
	}
	if _, err := d.ReadRegular("f", 2); err == nil {
		t.Error("ReadRegular ignored its limit")
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "f")); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("temporary left behind: %v", ents)
	}
	for _, bad := range []string{"", ".", "..", "a/b"} {
		if err := d.Write(bad, nil, 0o600); err == nil {
			t.Errorf("Write(%q) accepted", bad)
		}
	}
}

func TestOpenDirFollowsOnlyRootsLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to own links as another user")
	}
	t.Parallel()
	base, real := t.TempDir(), t.TempDir()
	if err := os.Symlink(real, filepath.Join(base, "trusted")); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(filepath.Join(base, "trusted"))
	if err != nil {
		t.Fatalf("root's link in root's directory refused: %v", err)
	}
	d.Close()
	// A relative target with '..' resolves as the kernel would.
	if err := os.Mkdir(filepath.Join(base, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../trusted", filepath.Join(base, "a", "up")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(real, "marker"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if d, err := OpenDir(filepath.Join(base, "a", "up")); err != nil {
		t.Errorf("root's link with ../ refused: %v", err)
	} else {
		if _, err := d.ReadRegular("marker", 10); err != nil {
			t.Errorf("the link led elsewhere: %v", err)
		}
		d.Close()
	}
	// The same link owned by another user is refused.
	if err := os.Lchown(filepath.Join(base, "trusted"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDir(filepath.Join(base, "trusted")); err == nil {
		t.Error("followed a link another user owns")
	}
	// Root's link in a directory others can write is refused too.
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(open, "l")); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenDir(filepath.Join(open, "l")); err == nil {
		t.Error("followed a link in a world-writable directory")
	}
	if _, err := OpenDir("relative"); err == nil {
		t.Error("accepted a relative path")
	}
	if _, err := OpenDir(base + "/../x"); err == nil {
		t.Error("accepted ..")
	}
}
