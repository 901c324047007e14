package privilege

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Effective reads the process's effective capability set from procRoot
// ("/proc")/self/status.
func Effective(procRoot string) (Set, error) {
	f, err := os.Open(procRoot + "/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("parse CapEff %q: %w", v, err)
			}
			return Set(n), nil
		}
	}
	return 0, fmt.Errorf("no CapEff in %s/self/status", procRoot)
}
