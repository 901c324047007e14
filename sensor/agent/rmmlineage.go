package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/tillwatch/tillwatch/sensor/detect/ransomware"
	"github.com/tillwatch/tillwatch/sensor/response"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// rmmLineage finds the catalogued remote-management agent a process is or
// descends from, by walking /proc parents: what the file guard needs to
// stop a tree under an agent at a lower score. It reads /proc directly
// (not the process table) because it runs on the guard's synchronous
// path, where the process source may not have seen a just-forked worker.
type rmmLineage struct {
	matcher  *rmm.Matcher
	approved map[string]bool
	procRoot string
	self     int
}

func newRMMLineage(cat *rmm.Catalog, approved []string, procRoot string) (*rmmLineage, error) {
	ok, err := cat.Resolve(approved)
	if err != nil {
		return nil, err
	}
	return &rmmLineage{matcher: rmm.NewMatcher(cat, runtime.GOOS), approved: ok, procRoot: procRoot, self: os.Getpid()}, nil
}

// maxLineage bounds the walk: real chains under an agent are a few deep.
const maxLineage = 32

// AgentOf implements fileguard.RMMLookup.
func (l *rmmLineage) AgentOf(pid int) *ransomware.RMMAgent {
	for range maxLineage {
		if pid <= 1 || pid == l.self {
			return nil
		}
		exe, _ := os.Readlink(filepath.Join(l.procRoot, strconv.Itoa(pid), "exe"))
		exe = strings.TrimSuffix(exe, " (deleted)")
		comm, _ := os.ReadFile(filepath.Join(l.procRoot, strconv.Itoa(pid), "comm"))
		name := strings.TrimSpace(string(comm))
		if p, _ := l.matcher.Process(name, exe); p != nil {
			return &ransomware.RMMAgent{Product: p.ID, ProductName: p.Name, Name: name, Executable: exe, PID: pid, Approved: l.approved[p.ID]}
		}
		st, err := response.ReadStat(l.procRoot, pid)
		if err != nil {
			return nil
		}
		pid = st.PPID
	}
	return nil
}
