package simdir

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCheckRefusesSystemFolders(t *testing.T) {
	t.Parallel()
	for _, d := range []string{"/", "/etc", "/etc/systemd/system", "/usr", "/usr/bin", "/bin", "/boot", "/var", "/var/lib", "/var/lib/tillwatch",
		"/home", "/root", "/root/.ssh", "/tmp", "/proc/self", "/dev"} {
		if _, err := os.Lstat(d); err != nil {
			continue
		}
		if _, err := Check(d); err == nil {
			t.Errorf("Check(%s) accepted a system folder", d)
		}
	}
	base := t.TempDir()
	if got, err := Check(base); err != nil || got != base {
		t.Errorf("Check(%s) = %q, %v; a test folder must be accepted", base, got, err)
	}
	hidden := filepath.Join(base, ".config")
	if err := os.Mkdir(hidden, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(hidden); err == nil {
		t.Error("a hidden folder was accepted")
	}
	link := filepath.Join(base, "etc")
	if err := os.Symlink("/etc", link); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(link); err == nil {
		t.Error("a symlink to /etc was accepted")
	}
	sub := filepath.Join(base, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(filepath.Join(base, "sub", "..", "..", "..", "..", "..", "..", "etc")); err == nil {
		t.Error("a path that cleans to /etc was accepted")
	}
}
