package action

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// asNobody runs argv as uid/gid 65534, as an unprivileged POS user would.
func asNobody(t *testing.T, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody %v: %v: %s", argv, err, out)
	}
}

// A user who owns the folder a file was quarantined from swaps that folder
// for a symlink to a root-only directory (standing for /etc/cron.d) before
// an analyst restores the file: root must not place the file, with its
// old owner and setuid mode, in the directory the link points at.
func TestRestoreFollowsUserSymlinkedFolder(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	world, err := os.MkdirTemp("", "quarantine-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(world) })
	root := filepath.Join(world, "pos")
	sub := filepath.Join(root, "sub")
	for _, d := range []string{world, root, sub} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{root, sub} {
		if err := os.Chown(d, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(t.TempDir(), "cron.d")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{StateDir: t.TempDir(), QuarantineDir: t.TempDir(), AllowedRoots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	evil := filepath.Join(sub, "evil.bin")
	plant(t, evil, []byte("* * * * * root id > /tmp/pwned\n"))
	f := &qfix{e: e}
	if res := f.run(evil); res.Status != StatusOK {
		t.Fatalf("quarantine: %+v", res)
	}
	list, err := e.ListQuarantine()
	if err != nil || len(list) != 1 {
		t.Fatalf("ListQuarantine = %+v, %v", list, err)
	}

	asNobody(t, "mv", sub, sub+".old")
	asNobody(t, "ln", "-s", outside, sub)

	err = e.Restore(list[0].ID)
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("restore followed the user's link and wrote %v into %s", ents, outside)
	}
	if err == nil {
		t.Fatal("restore through a user's symlink reported success")
	}
	t.Logf("refused: %v", err)
	if list, _ := e.ListQuarantine(); len(list) != 1 {
		t.Errorf("the refused restore lost the quarantined file: %+v", list)
	}
}
