package rmm

import "github.com/tillwatch/tillwatch/sensor/proctree"

// Agent is the nearest catalogued remote-management agent at or above a
// process.
type Agent struct {
	Product *Product
	Proc    proctree.Proc
	// Chain holds the processes walked, nearest first, up to and including
	// the agent.
	Chain []proctree.Proc
}

// FindAgent returns the first process of chain (nearest first, as
// proctree.Table.Ancestry returns it) that is a catalogued agent, or nil.
func (m *Matcher) FindAgent(chain []proctree.Proc) *Agent {
	for i, p := range chain {
		if prod, _ := m.Process(p.Name, p.Executable); prod != nil {
			return &Agent{Product: prod, Proc: p, Chain: chain[:i+1]}
		}
	}
	return nil
}

// Step reads one process for WalkAgent: its name and executable and its
// parent's pid; ok is false when the process is gone.
type Step func(pid int) (p proctree.Proc, ppid int, ok bool)

// WalkAgent walks up from pid itself, one Step at a time, and returns the
// nearest catalogued agent, or nil at pid 1, at a pid for which stop is
// true, at a process that is gone or where proctree.Up ends a walk. It
// reads no more than it must: the walk ends at the first agent.
func (m *Matcher) WalkAgent(pid int, step Step, stop func(pid int) bool) *Agent {
	var chain []proctree.Proc
	var found *Agent
	proctree.Up(pid, func(pid int) (int, bool) {
		if stop(pid) {
			return 0, false
		}
		p, ppid, ok := step(pid)
		if !ok {
			return 0, false
		}
		chain = append(chain, p)
		if found = m.FindAgent(chain[len(chain)-1:]); found != nil {
			found.Chain = chain
			return 0, false
		}
		return ppid, true
	})
	return found
}
