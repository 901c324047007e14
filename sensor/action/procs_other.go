//go:build !linux

package action

// Process control reads /proc, so it is Linux-only: elsewhere every
// process action is refused as unsupported.
const supportsProcesses = false

type proc struct {
	PID, PPID int
	Comm, Exe string
	Deleted   bool
	Start     uint64
	Kernel    bool
	Dead      bool
}

func (e *Executor) readProc(int) (proc, error)     { return proc{}, ErrUnsupported }
func (e *Executor) procs() ([]proc, error)         { return nil, ErrUnsupported }
func (e *Executor) startMilli(proc) (int64, error) { return 0, ErrUnsupported }
func (e *Executor) killTree(int) ([]int, error)    { return nil, ErrUnsupported }
func (e *Executor) exeSHA256(int) (string, error)  { return "", ErrUnsupported }
func (e *Executor) ancestors() []int               { return nil }
