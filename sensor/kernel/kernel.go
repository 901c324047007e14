// Package kernel is the sensor's kernel layer: eBPF programs on syscall and
// sched tracepoints that report every exec with its full argv, mark the
// remote-management agents' process trees (taint, inherited at fork in the
// kernel), and stop attacks on the sensor and its decoys synchronously, at
// the syscall, with bpf_send_signal. Programs, links and maps are pinned in
// bpffs, so the tripwires keep acting while the sensor is dead or
// restarting; a restarted sensor re-uses the pins instead of attaching twice.
//
// Only tracepoints are used: BPF LSM, fentry and kprobes are refused on
// some kernels the sensor must protect. See docs/kernel.md.
package kernel

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// DefaultPinDir is where the layer pins its programs, links and maps.
const DefaultPinDir = "/sys/fs/bpf/tillwatch"

// Config configures the kernel layer.
type Config struct {
	// PinDir is the bpffs directory for the pins. Default DefaultPinDir.
	PinDir string
	// Enforce makes tripwires kill and stop; without it they only report.
	Enforce bool
	// Decoys arms the decoy tripwire (SIGSTOP on a write-open, rename,
	// unlink or link of a decoy's basename).
	Decoys bool
	// FreshExec arms the fresh-exec tripwire: a process under an RMM agent
	// that execs a file its tree wrote, renamed into place or made
	// executable in the last FreshWindow is stopped at exec and judged
	// (see JudgeFresh).
	FreshExec bool

	// noKernelBTF loads as on a kernel without BTF (tests).
	noKernelBTF bool
}

func (c Config) withDefaults() Config {
	if c.PinDir == "" {
		c.PinDir = DefaultPinDir
	}
	return c
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.PinDir != "" && (!filepath.IsAbs(c.PinDir) || filepath.Clean(c.PinDir) != c.PinDir) {
		errs = append(errs, fmt.Errorf("kernel.pin_dir %q: want a clean absolute path", c.PinDir))
	}
	return errors.Join(errs...)
}

// Reason says why a tripwire fired (the programs' WHY_* values).
type Reason uint32

// Reasons.
const (
	ReasonSignal      Reason = 1  // a tainted process signalled the sensor
	ReasonExecTool    Reason = 2  // a tainted process exec'd a tamper tool naming the sensor
	ReasonHostile     Reason = 3  // a member of a hostile family made a syscall
	ReasonPath        Reason = 4  // a tainted process wrote, renamed or unlinked a sensor path
	ReasonPidfd       Reason = 5  // a tainted process opened a pidfd on the sensor
	ReasonDecoyOpen   Reason = 16 // a process opened a decoy for writing
	ReasonDecoyRename Reason = 17
	ReasonDecoyUnlink Reason = 18
	ReasonDecoyLink   Reason = 19
	ReasonFreshExec   Reason = 32 // a process under an RMM agent exec'd a file its tree just wrote
)

// String returns the reason as a short word for logs and alerts.
func (r Reason) String() string {
	switch r {
	case ReasonSignal:
		return "signal-to-sensor"
	case ReasonExecTool:
		return "tamper-tool-exec"
	case ReasonHostile:
		return "hostile-family"
	case ReasonPath:
		return "sensor-path-write"
	case ReasonPidfd:
		return "pidfd-on-sensor"
	case reasonUnreported:
		return "unreported-hostile-family"
	case ReasonDecoyOpen:
		return "decoy-write"
	case ReasonDecoyRename:
		return "decoy-rename"
	case ReasonDecoyUnlink:
		return "decoy-unlink"
	case ReasonDecoyLink:
		return "decoy-link"
	case ReasonFreshExec:
		return "fresh-exec"
	}
	return fmt.Sprintf("reason-%d", uint32(r))
}

// Decoy reports whether r is a decoy tripwire (the caller was stopped and
// waits for a judgement) rather than a tamper tripwire (the caller was killed).
func (r Reason) Decoy() bool { return r >= ReasonDecoyOpen && r < ReasonFreshExec }

// Stops reports whether the tripwire stopped the caller (SIGSTOP) and
// left it to the sensor's judgement: the decoy and fresh-exec tripwires.
func (r Reason) Stops() bool { return r >= ReasonDecoyOpen }

// Tamper is one tripwire firing, as read from the kernel.
type Tamper struct {
	Reason Reason
	PID    int // the process the tripwire acted on
	TID    int
	UID    int
	TimeNS uint64 // CLOCK_MONOTONIC
	// Target is the pid signalled (ReasonSignal, ReasonPidfd), else 0.
	Target int
	// Signal is the signal the caller sent (ReasonSignal) or the one the
	// kernel sent it (SIGSTOP for decoys).
	Signal int
	// Family is the tainted tree the caller belongs to (0 if none or the
	// agent itself).
	Family int
	// Name is the tool's argument or path that named the sensor, or the
	// decoy's basename (cut to KeyLen-1 bytes).
	Name string
}

// KeyLen is the size of a name compared in the kernel: tool names, sensor
// names and paths, and decoy basenames longer than KeyLen-1 bytes are cut.
const KeyLen = 64

// DefaultTools are the programs that stop, disable, remove or kill a
// service, looked for at exec by a tainted process.
var DefaultTools = []string{
	"systemctl", "service", "initctl", "update-rc.d", "chkconfig", "invoke-rc.d",
	"kill", "pkill", "killall", "pidof", "pgrep", "skill", "xargs",
	"apt", "apt-get", "aptitude", "dpkg", "rpm", "yum", "dnf", "snap",
	"rm", "mv", "chmod", "chattr", "truncate", "shred", "unlink", "ln", "cp", "dd", "tee",
	"umount", "bpftool",
}

// key packs s into a kernel key: cut, zero-filled.
func key(s string) (k [KeyLen]byte) {
	copy(k[:KeyLen-1], s)
	return k
}

// cstr returns the string before the first NUL of b.
func cstr(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// Hostile is a process family declared hostile in the kernel.
type Hostile struct {
	Family int
	TimeNS uint64 // CLOCK_MONOTONIC, when it was declared
}

// Stopped is a process a decoy tripwire stopped, waiting for a judgement.
type Stopped struct {
	PID    int
	TimeNS uint64
	Reason Reason
	Name   string
}

// FreshWindow is how long after a tainted process wrote, renamed or
// chmodded a file an exec of it stops the caller (FRESH_NS in the programs).
const FreshWindow = 5 * time.Minute

// FreshHow says how a fresh file was made (FRESH_* bits in the programs).
type FreshHow uint32

// Ways a file becomes fresh.
const (
	FreshWrite  FreshHow = 1 // opened for writing
	FreshRename FreshHow = 2 // renamed into place
	FreshChmod  FreshHow = 4 // made executable
)

// FreshFile is the kernel's record of a file a tainted process made.
type FreshFile struct {
	Name   string // basename
	TimeNS uint64 // CLOCK_MONOTONIC of the last write, rename or chmod
	// Writer is the process that wrote it (or renamed or chmodded it when
	// no write by the tree was seen); Comm is its name at the write.
	Writer int
	Family int
	How    FreshHow
	Comm   string
}

// RingDrops counts records the kernel could not put in its rings.
type RingDrops struct {
	Process uint64 // exec, fork and exit records
	Tamper  uint64 // tripwire records
}

// ShellExitCode turns a wait status (the kernel's task exit_code) into a
// shell-style code: the exit code, or 128+signal when a signal ended it.
func ShellExitCode(status uint32) int {
	if sig := status & 0x7f; sig != 0 {
		return 128 + int(sig)
	}
	return int(status>>8) & 0xff
}
