package canary

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

const nobody = 65534

// asNobody runs argv as uid/gid 65534, the way a POS user without
// privileges would, and fails the test if it fails.
func asNobody(t *testing.T, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as nobody %v: %v: %s", argv, err, out)
	}
}

// worldDir makes a directory every user can traverse (t.TempDir is 0700),
// removed at the end.
func worldDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "canary-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// A user who can write a watched folder plants a symlink where the sensor
// writes while restoring a decoy, deletes the decoy, and waits for root to
// write through the link. The link's target stands for a root-only file
// (the sensor's own state, a unit file); it must come through untouched,
// and nothing may appear in the directory a swapped folder points at.
func TestRootWritesThroughUserSymlinkOnDecoyRestore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as an unprivileged user")
	}
	t.Parallel()
	for _, tc := range []struct {
		name string
		// attack runs as nobody; pos is the nobody-owned folder holding
		// the watched folder data, decoy the decoy's path, target the
		// root-only file, outside a root-only directory.
		attack func(t *testing.T, pos, decoy, target, outside string)
	}{
		{"link at the old fixed temporary name", func(t *testing.T, pos, decoy, target, _ string) {
			asNobody(t, "ln", "-s", target, filepath.Join(filepath.Dir(decoy), ".tillwatch-canary.tmp"))
			asNobody(t, "rm", "-f", decoy)
		}},
		{"decoy replaced by a link", func(t *testing.T, pos, decoy, target, _ string) {
			asNobody(t, "rm", "-f", decoy)
			asNobody(t, "ln", "-s", target, decoy)
		}},
		{"watched folder swapped for a link", func(t *testing.T, pos, decoy, _, outside string) {
			data := filepath.Dir(decoy)
			asNobody(t, "rm", "-f", decoy)
			asNobody(t, "mv", data, data+".old")
			asNobody(t, "ln", "-s", outside, data)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			state, rootOnly := t.TempDir(), t.TempDir()
			target := filepath.Join(rootOnly, "state.json")
			const secret = `{"root":"only"}`
			if err := os.WriteFile(target, []byte(secret), 0o600); err != nil {
				t.Fatal(err)
			}
			outside := filepath.Join(rootOnly, "etc")
			if err := os.Mkdir(outside, 0o755); err != nil {
				t.Fatal(err)
			}
			// /tmp/x/pos is nobody's; the watched folder pos/data too.
			pos := filepath.Join(worldDir(t), "pos")
			data := filepath.Join(pos, "data")
			for _, d := range []string{pos, data} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chown(d, nobody, nobody); err != nil {
					t.Fatal(err)
				}
			}
			// The decoys' parent must be reachable by nobody for the
			// symlink targets to be plausible; rootOnly stays 0700.
			s, err := Plant(state, []string{data})
			if err != nil {
				t.Fatal(err)
			}
			decoy := s.Paths()[0]
			tc.attack(t, pos, decoy, target, outside)

			restoreErr := s.Restore(decoy)
			if got, err := os.ReadFile(target); err != nil || string(got) != secret {
				t.Fatalf("root wrote through the user's link: target now %.40q (%v)", got, err)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("root wrote into the directory the user linked to: %v", ents)
			}
			if fi, err := os.Lstat(decoy); restoreErr == nil && (err != nil || !fi.Mode().IsRegular()) {
				t.Fatalf("restore reported success but %s is %v (%v)", decoy, fi, err)
			}
			t.Logf("restore: %v", restoreErr)
		})
	}
}
