package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/tillwatch/tillwatch/sensor/detect/ransomware"
	"github.com/tillwatch/tillwatch/sensor/proctree"
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

// AgentOf implements fileguard.RMMLookup.
func (l *rmmLineage) AgentOf(pid int) *ransomware.RMMAgent {
	a := l.matcher.WalkAgent(pid, l.step, func(pid int) bool { return pid == l.self })
	if a == nil {
		return nil
	}
	return &ransomware.RMMAgent{Product: a.Product.ID, ProductName: a.Product.Name, Name: a.Proc.Name,
		Executable: a.Proc.Executable, PID: a.Proc.PID, Approved: l.approved[a.Product.ID]}
}

// step reads pid's executable, name and parent from /proc. The name and
// executable are read before the parent, as before: a process that exits
// meanwhile is matched on what was read and ends the walk.
func (l *rmmLineage) step(pid int) (proctree.Proc, int, bool) {
	dir := filepath.Join(l.procRoot, strconv.Itoa(pid))
	exe, _ := os.Readlink(filepath.Join(dir, "exe"))
	comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
	p := proctree.Proc{PID: pid, Name: strings.TrimSpace(string(comm)), Executable: strings.TrimSuffix(exe, " (deleted)")}
	st, err := response.ReadStat(l.procRoot, pid)
	if err != nil {
		// Gone: still match what was read (the agent itself may have
		// exited), but walk no further.
		return p, 0, true
	}
	return p, st.PPID, true
}
