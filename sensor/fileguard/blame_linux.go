package fileguard

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// injectionVars are the loader variables that put another library's code
// into a program: a process started with one set is not its executable's
// doing.
var injectionVars = []string{"LD_PRELOAD=", "LD_AUDIT=", "LD_LIBRARY_PATH="}

// exeToBlame says whether the executable exe of the stopped process pid
// may be quarantined for what the process did, and if not, why. Stopping
// the process is always right; taking its program off the till is right
// only when the program is the attacker's:
//   - a program installed by another user (root-owned, not writable by the
//     process's user) that a user ran is a tool misused, not malware: the
//     user could not have written it, and quarantining it would let any
//     user take any installed program off the till by misusing it;
//   - a process started with LD_PRELOAD, LD_AUDIT or LD_LIBRARY_PATH, or
//     with executable code mapped from a file that is not root's and
//     read-only to others, ran code that is not its executable's.
//
// A dropped binary run by the user who dropped it (root included) is
// still quarantined.
func exeToBlame(procRoot string, pid int, exe string) (bool, string) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	uid, err := processUID(dir)
	if err != nil {
		return false, fmt.Sprintf("%s: cannot read the process's user: %v", exe, err)
	}
	// The inode the process runs, not whatever the path names now.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "exe"), &st); err != nil {
		return false, fmt.Sprintf("%s: %v", exe, err)
	}
	if int(st.Uid) != uid && st.Mode&0o022 == 0 {
		return false, fmt.Sprintf("%s belongs to uid %d and was run by uid %d, who cannot have written it: an installed program misused, not quarantined", exe, st.Uid, uid)
	}
	env, err := os.ReadFile(filepath.Join(dir, "environ"))
	if err != nil {
		return false, fmt.Sprintf("%s: cannot read the process's environment: %v", exe, err)
	}
	for _, kv := range bytes.Split(env, []byte{0}) {
		for _, v := range injectionVars {
			if bytes.HasPrefix(kv, []byte(v)) && len(kv) > len(v) {
				return false, fmt.Sprintf("%s ran with %s: code was injected, not quarantined", exe, kv)
			}
		}
	}
	lib, err := foreignCode(dir, exe)
	if err != nil {
		return false, fmt.Sprintf("%s: cannot read the process's mappings: %v", exe, err)
	}
	if lib != "" {
		return false, fmt.Sprintf("%s ran code from %s, which a user other than root could have written: not quarantined", exe, lib)
	}
	return true, ""
}

// processUID is the real uid in dir/status.
func processUID(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, fmt.Errorf("no Uid line in %s/status", dir)
}

// foreignCode returns the first file mapped executable into the process,
// other than exe, that root does not own or that others can write ("" if
// none).
func foreignCode(dir, exe string) (string, error) {
	f, err := os.Open(filepath.Join(dir, "maps"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	seen := map[string]bool{exe: true}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// address perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.Contains(fields[1], "x") || !strings.HasPrefix(fields[5], "/") {
			continue
		}
		p := strings.Join(fields[5:], " ")
		if seen[p] {
			continue
		}
		seen[p] = true
		var st syscall.Stat_t
		if err := syscall.Stat(strings.TrimSuffix(p, " (deleted)"), &st); err != nil || st.Uid != 0 || st.Mode&0o022 != 0 {
			return p, nil
		}
	}
	return "", sc.Err()
}
