// Package simdir decides which folders the simulators (sim/ransomware,
// sim/rmmchain) may work in. They run as root on a till and write, encrypt
// and delete under the folder they are given, so a system folder, or a
// folder reached through a symlink, is refused: a mistyped --dir / or a
// link a user planted must never turn a test into damage.
package simdir

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Refused lists folders a simulator never works in, nor anywhere under
// them: the system's programs, libraries, configuration, kernel
// interfaces, and logs and state of installed software (the sensor's own
// included).
var Refused = []string{
	"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
	"/sbin", "/snap", "/sys", "/usr", "/var/backups", "/var/cache", "/var/lib/tillwatch", "/var/log",
	"/var/mail", "/var/spool",
}

// RefusedExact lists folders refused themselves (a folder below them is
// fine): the roots that hold everyone's data, and root's home (a test
// folder such as /root/rmm-test is fine).
var RefusedExact = []string{"/", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var", "/var/lib", "/var/tmp"}

// Check returns dir as a clean absolute path if a simulator may use it:
// an existing directory, not a symlink, that neither as given nor with
// symlinks resolved is a refused folder or a hidden one (a name starting
// with ".", such as ~/.ssh or ~/.config, or anything below one).
func Check(dir string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("no folder given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Lstat(abs)
	if err != nil {
		return "", err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return "", fmt.Errorf("%s is a symlink: give the folder it points at", abs)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", abs)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	for _, p := range []string{abs, real} {
		if err := refused(p); err != nil {
			return "", fmt.Errorf("%s: %w", abs, err)
		}
	}
	return abs, nil
}

func refused(p string) error {
	for _, r := range RefusedExact {
		if p == r {
			return fmt.Errorf("a simulator never works in %s itself: give a test folder below it", r)
		}
	}
	for _, r := range Refused {
		if p == r || strings.HasPrefix(p, r+"/") {
			return fmt.Errorf("a simulator never works in %s or below it", r)
		}
	}
	for _, c := range strings.Split(p, "/") {
		if strings.HasPrefix(c, ".") {
			return fmt.Errorf("a simulator never works in a hidden folder (%s) or below it", c)
		}
	}
	if home, err := os.UserHomeDir(); err == nil && os.Geteuid() == 0 && home != "" && home != "/" && p == filepath.Clean(home) {
		return fmt.Errorf("a simulator never works in root's home %s itself", home)
	}
	return nil
}
