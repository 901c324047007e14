package action

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type qfix struct {
	e            *Executor
	root, out, q string
}

func newQuarantine(t *testing.T, qdir string) *qfix {
	t.Helper()
	requireRoot(t)
	f := &qfix{root: filepath.Join(t.TempDir(), "pos"), out: t.TempDir(), q: qdir}
	if err := os.MkdirAll(filepath.Join(f.root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: t.TempDir(), QuarantineDir: qdir, AllowedRoots: []string{f.root}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	f.e = e
	f.q = e.qdir
	return f
}

func (f *qfix) run(path string) Result {
	return f.e.Run(context.Background(), Request{CommandID: "cmd-q1", Action: ActQuarantineFile, Params: map[string]string{"path": path}})
}

// plant writes a file with a distinctive mode, owner and mtime.
func plant(t *testing.T, p string, content []byte) time.Time {
	t.Helper()
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, os.ModeSetuid|0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, os.ModeSetuid|0o750); err != nil { // chown cleared setuid
		t.Fatal(err)
	}
	mt := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	return mt
}

func statT(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func TestQuarantineAndRestore(t *testing.T) {
	t.Parallel()
	f := newQuarantine(t, t.TempDir())
	evil := filepath.Join(f.root, "sub", "evil.bin")
	content := []byte("MZ not really " + randHex(t, 8))
	mt := plant(t, evil, content)
	sum := sha256.Sum256(content)

	res := f.run(evil)
	if res.Status != StatusOK || len(res.Affected) != 1 || res.Affected[0] != evil {
		t.Fatalf("quarantine: %+v", res)
	}
	if _, err := os.Lstat(evil); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("original still present: %v", err)
	}
	list, err := f.e.ListQuarantine()
	if err != nil || len(list) != 1 {
		t.Fatalf("ListQuarantine = %+v, %v", list, err)
	}
	q := list[0]
	if q.OriginalPath != evil || q.SHA256 != hex.EncodeToString(sum[:]) || q.Size != int64(len(content)) || q.Mode != "4750" ||
		q.UID != 1234 || q.GID != 5678 || !q.MTime.Equal(mt) || q.CommandID != "cmd-q1" || q.QuarantinedAt.IsZero() {
		t.Errorf("metadata %+v", q)
	}
	held := filepath.Join(f.q, q.ID, QuarantineFileName)
	if st := statT(t, held); st.Mode&0o7777 != 0 || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("quarantined copy mode %o owner %d:%d, want 0000 root", st.Mode&0o7777, st.Uid, st.Gid)
	}
	if st := statT(t, filepath.Join(f.q, q.ID)); st.Mode&0o777 != 0o700 {
		t.Errorf("entry dir mode %o, want 0700", st.Mode&0o777)
	}
	if st := statT(t, f.q); st.Mode&0o777 != 0o700 {
		t.Errorf("quarantine dir mode %o, want 0700", st.Mode&0o777)
	}
	if b, _ := os.ReadFile(held); !bytes.Equal(b, content) {
		t.Error("quarantined content differs")
	}
	if res := f.run(evil); res.Status != StatusNoop || !strings.Contains(res.Detail, q.ID) {
		t.Errorf("quarantining again: %+v, want noop naming %s", res, q.ID)
	}

	if err := f.e.Restore(q.ID); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(evil); err != nil || !bytes.Equal(b, content) {
		t.Fatalf("restored content %q, %v", b, err)
	}
	st := statT(t, evil)
	if st.Mode&0o7777 != 0o4750 || st.Uid != 1234 || st.Gid != 5678 || st.Mtim.Sec != mt.Unix() {
		t.Errorf("restored mode %o owner %d:%d mtime %d; want 4750 1234:5678 %d", st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Sec, mt.Unix())
	}
	if list, _ := f.e.ListQuarantine(); len(list) != 0 {
		t.Errorf("entry kept after restore: %+v", list)
	}
	if err := f.e.Restore(q.ID); err == nil {
		t.Error("restoring twice must fail")
	}
}

func TestRestoreNeverOverwrites(t *testing.T) {
	t.Parallel()
	f := newQuarantine(t, t.TempDir())
	p := filepath.Join(f.root, "dropper.sh")
	plant(t, p, []byte("#!/bin/sh\necho evil\n"))
	if res := f.run(p); res.Status != StatusOK {
		t.Fatalf("quarantine: %+v", res)
	}
	list, _ := f.e.ListQuarantine()
	if err := os.WriteFile(p, []byte("new legit file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.e.Restore(list[0].ID); !errors.Is(err, ErrExists) {
		t.Fatalf("Restore over an existing file = %v, want ErrExists", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new legit file" {
		t.Fatalf("the existing file was overwritten: %q", b)
	}
	if list, _ := f.e.ListQuarantine(); len(list) != 1 {
		t.Fatal("a refused restore dropped the quarantine entry")
	}
	for _, bad := range []string{"../x", "", list[0].ID + "/../x"} {
		if err := f.e.Restore(bad); err == nil {
			t.Errorf("Restore(%q) accepted", bad)
		}
	}
}

func TestQuarantineRefusals(t *testing.T) {
	t.Parallel()
	f := newQuarantine(t, t.TempDir())
	secret := filepath.Join(f.out, "secret")
	if err := os.WriteFile(secret, []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(f.root, "link")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	dirLink := filepath.Join(f.root, "dirlink")
	if err := os.Symlink(f.out, dirLink); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(f.root, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path, want string }{
		{"symlink pointing outside the root", link, "not under an allowed root"},
		{"directory symlink pointing outside", filepath.Join(dirLink, "secret"), "not under an allowed root"},
		{"../ traversal", filepath.Join(f.root, "..") + "/../" + filepath.Base(f.out) + "/secret", "not clean"},
		{"path outside the roots", secret, "not under an allowed root"},
		{"directory", filepath.Join(f.root, "sub"), "not a regular file"},
		{"the root itself", f.root, "not under an allowed root"},
		{"fifo", fifo, "not a regular file"},
		{"missing file", filepath.Join(f.root, "nothing"), "does not exist"},
		{"relative path", "pos/x", "not absolute"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := f.run(tc.path)
			if res.Status != StatusRefused || !strings.Contains(res.Detail, tc.want) {
				t.Fatalf("quarantine %s: %+v, want refused with %q", tc.path, res, tc.want)
			}
		})
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "outside" {
		t.Fatalf("the file outside the root was touched: %q, %v", b, err)
	}
	if list, _ := f.e.ListQuarantine(); len(list) != 0 {
		t.Fatalf("refusals left entries: %+v", list)
	}
}

// TestQuarantineSymlinkInsideRoot quarantines the target of a link that
// stays inside the root, and reports the resolution.
func TestQuarantineSymlinkInsideRoot(t *testing.T) {
	t.Parallel()
	f := newQuarantine(t, t.TempDir())
	target := filepath.Join(f.root, "sub", "payload")
	plant(t, target, []byte("payload"))
	link := filepath.Join(f.root, "shortcut")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	res := f.run(link)
	if res.Status != StatusOK || res.Affected[0] != target || !strings.Contains(res.Detail, "resolved from "+link) {
		t.Fatalf("quarantine through an inner link: %+v", res)
	}
	if res := f.run(link); res.Status != StatusNoop {
		t.Fatalf("again through the now dangling link: %+v, want noop", res)
	}
}

// TestQuarantineAcrossFileSystems moves into a quarantine on another file
// system (tmpfs /dev/shm): copy, fsync, unlink — and back on restore.
func TestQuarantineAcrossFileSystems(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	shm, err := os.MkdirTemp("/dev/shm", "tillwatch-q-")
	if err != nil {
		t.Skip("no writable /dev/shm:", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(shm) })
	f := newQuarantine(t, filepath.Join(shm, "q"))
	if statT(t, f.root).Dev == statT(t, shm).Dev {
		t.Skip("/dev/shm is on the same file system as the temp dir")
	}
	p := filepath.Join(f.root, "x.bin")
	mt := plant(t, p, []byte("cross-device"))
	if res := f.run(p); res.Status != StatusOK {
		t.Fatalf("quarantine across file systems: %+v", res)
	}
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("original not removed")
	}
	list, _ := f.e.ListQuarantine()
	if len(list) != 1 {
		t.Fatalf("entries %+v", list)
	}
	if st := statT(t, filepath.Join(f.q, list[0].ID, QuarantineFileName)); st.Mode&0o7777 != 0 {
		t.Errorf("copy mode %o, want 0000", st.Mode&0o7777)
	}
	if err := f.e.Restore(list[0].ID); err != nil {
		t.Fatal(err)
	}
	if st := statT(t, p); st.Mode&0o7777 != 0o4750 || st.Uid != 1234 || st.Mtim.Sec != mt.Unix() {
		t.Errorf("restored across file systems: mode %o uid %d", st.Mode&0o7777, st.Uid)
	}
}

// TestQuarantineNeverTakesTheSensorsOwnState: a quarantine dir below an
// allowed root is still off limits.
func TestQuarantineNeverTakesTheSensorsOwnState(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	root := t.TempDir()
	e, err := New(Options{StateDir: filepath.Join(root, "state"), AllowedRoots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	own := filepath.Join(root, "state", "action", "x")
	if err := os.WriteFile(own, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := e.Run(context.Background(), Request{Action: ActQuarantineFile, Params: map[string]string{"path": own}})
	if res.Status != StatusRefused || !strings.Contains(res.Detail, "own state directory") {
		t.Fatalf("quarantine of the sensor's state: %+v", res)
	}
}
