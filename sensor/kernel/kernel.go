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
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultPinDir is where the layer pins its programs, links and maps.
const DefaultPinDir = "/sys/fs/bpf/tillwatch"

// Config configures the kernel layer.
type Config struct {
	// PinDir is the bpffs directory for the pins. Default DefaultPinDir.
	PinDir string
	// ProcRing and TamperRing are the sizes in bytes of the process and
	// the tripwire ring (a power of two multiple of the page size; see
	// ValidRing). Defaults DefaultProcRing and DefaultTamperRing. A pinned
	// ring of another size (the setting changed since the pins were made) is
	// replaced at Load.
	ProcRing, TamperRing int
	// Log receives what Load changed in the pins (a replaced ring); nil
	// discards it.
	Log *slog.Logger
	// TaintedOnly makes the decoy and burst tripwires act on processes
	// under an RMM agent only: the sensor's stop was asked for by one
	// (see sensor/agent), so the attacker's tree stays held while nothing
	// judges, and the operator's own work is not stopped.
	TaintedOnly bool
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
	// IOUring arms the io_uring tripwire: a process under an RMM agent (not
	// the agent) that sets up, enters or registers with an io_uring is
	// stopped for the sensor, which ends its tree. A ring's opens, writes,
	// renames and unlinks pass no syscall tracepoint, so every path
	// tripwire would be walked past.
	IOUring bool

	// noKernelBTF loads as on a kernel without BTF (tests).
	noKernelBTF bool
	// Burst arms the burst tripwire: a process whose write-opens, renames
	// and unlinks in the guarded trees (or its family's: its parent's and
	// grandparent's, or its tainted tree's) reach BurstThreshold within
	// BurstWindow is stopped for the sensor's judgement.
	Burst bool
	// BurstThreshold and BurstWindow: defaults DefaultBurstThreshold and
	// DefaultBurstWindow.
	BurstThreshold int
	BurstWindow    time.Duration
	// GuardRoots are the guarded trees (absolute, clean): an absolute path
	// outside them is not counted. A root the kernel cannot compare
	// (longer than KeyLen-1 bytes, or "/") is left to the file guard; with
	// none left the burst tripwire is off (see BurstRoots).
	GuardRoots []string
	// Relative paths (openat(dirfd, "name"), a process working in its
	// current folder) count when they land inside a guarded root: the
	// kernel walks up from the directory they start in and compares the
	// roots' identities (DirID, taken when the tripwire is armed).
}

// Burst defaults: a process (or family) that changes 32 files in the
// guarded trees within a second is held for judgement. An encryptor at
// 400 files/s reaches it in 80 ms; an honest bulk writer (tar, gzip -r,
// cp -r) is stopped once, judged and let go (see AllowFor).
const (
	DefaultBurstThreshold = 32
	DefaultBurstWindow    = time.Second
	// AllowFor is how long a process judged honest after a burst stop is
	// not counted again.
	AllowFor = 5 * time.Minute
	// MaxGuardRoots is how many guarded trees the kernel compares.
	MaxGuardRoots = 8
)

// Ring defaults. The reader maps a ring's data pages twice (so that a
// record wrapping the end reads in one piece) and the kernel maps them all
// at once, so a ring costs the sensor twice its size in resident memory.
//
// The process ring is read continuously; its size is what a till produces
// while no sensor reads it: a restart (about 5 s), or a reader starved
// during an exec storm. A process start is one fork (40 bytes on the
// ring), one exec request (304 bytes and its command line), one exec (296)
// and one exit record (40): about 700 bytes for `/bin/true`, so 1 MiB holds
// about 1,500 starts, 300 a second over a restart (TestRingDropsCounted
// fills it). More is counted in RingDrops and reported as a health event;
// the process source then falls back to what /proc still shows.
// The reader is woken once 256 KiB wait (WAKE_BYTES in bpf/tripwire.c),
// so the ring must be larger than that: MinProcRing.
//
// A tripwire record is 112 bytes: 128 KiB holds about 1,100, and every
// tripwire's lasting state (hostile families, stopped processes) is in
// pinned maps besides, so a full tamper ring loses the record, not the
// stop.
const (
	DefaultProcRing   = 1 << 20
	DefaultTamperRing = 128 << 10
	MinProcRing       = 512 << 10
	MinTamperRing     = 16 << 10
	MaxRing           = 256 << 20
)

// ValidRing reports whether n bytes is a ring size the kernel accepts (a
// power of two multiple of the page size) within [min, MaxRing].
func ValidRing(n, min int) bool {
	page := os.Getpagesize()
	return n >= min && n >= page && n <= MaxRing && n&(n-1) == 0 && n%page == 0
}

func (c Config) withDefaults() Config {
	if c.PinDir == "" {
		c.PinDir = DefaultPinDir
	}
	if c.ProcRing == 0 {
		c.ProcRing = DefaultProcRing
	}
	if c.TamperRing == 0 {
		c.TamperRing = DefaultTamperRing
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.BurstThreshold == 0 {
		c.BurstThreshold = DefaultBurstThreshold
	}
	if c.BurstWindow == 0 {
		c.BurstWindow = DefaultBurstWindow
	}
	return c
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if c.PinDir != "" && (!filepath.IsAbs(c.PinDir) || filepath.Clean(c.PinDir) != c.PinDir) {
		errs = append(errs, fmt.Errorf("kernel.pin_dir %q: want a clean absolute path", c.PinDir))
	}
	for _, r := range []struct {
		name   string
		n, min int
	}{{"proc_ring_bytes", c.ProcRing, MinProcRing}, {"tamper_ring_bytes", c.TamperRing, MinTamperRing}} {
		if r.n != 0 && !ValidRing(r.n, r.min) {
			errs = append(errs, fmt.Errorf("kernel.%s %d: want a power of two multiple of the page size (%d) from %d to %d", r.name, r.n, os.Getpagesize(), r.min, MaxRing))
		}
	}
	if c.BurstThreshold < 0 || c.BurstWindow < 0 {
		errs = append(errs, fmt.Errorf("kernel burst threshold %d and window %s: want positive values", c.BurstThreshold, c.BurstWindow))
	}
	for _, r := range c.GuardRoots {
		if !filepath.IsAbs(r) || filepath.Clean(r) != r {
			errs = append(errs, fmt.Errorf("kernel guarded root %q: want a clean absolute path", r))
		}
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
	ReasonReach       Reason = 7  // a tainted process ptrace-attached, wrote the memory of, set a limit or a scheduling class on the sensor, opened its /proc memory, environment or OOM score, or took its descriptors
	ReasonBPF         Reason = 8  // a tainted process asked for a handle on a loaded BPF object
	ReasonDecoyOpen   Reason = 16 // a process opened a decoy for writing
	ReasonDecoyRename Reason = 17
	ReasonDecoyUnlink Reason = 18
	ReasonDecoyLink   Reason = 19
	ReasonFreshExec   Reason = 32 // a process under an RMM agent exec'd a file its tree just wrote
	// ReasonFreshHandoff: a process outside every RMM tree (started by a
	// service manager, cron, at or a container runtime on a tree's behalf)
	// exec'd a file such a tree just wrote.
	ReasonFreshHandoff Reason = 33
	ReasonBurst        Reason = 20 // a process (or its family) crossed the burst threshold
	ReasonHandleWrite  Reason = 21 // a process under an RMM agent opened a file by handle for writing
	ReasonIOUring      Reason = 22 // a process under an RMM agent made an io_uring call
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
	case ReasonReach:
		return "reach-into-sensor"
	case ReasonBPF:
		return "bpf-object-handle"
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
	case ReasonFreshHandoff:
		return "fresh-exec-handoff"
	case ReasonBurst:
		return "file-burst"
	case ReasonHandleWrite:
		return "handle-write"
	case ReasonIOUring:
		return "io-uring"
	}
	return fmt.Sprintf("reason-%d", uint32(r))
}

// Fresh reports whether r is a fresh-exec stop (the tree's own exec or a
// hand-off), judged by JudgeFresh.
func (r Reason) Fresh() bool { return r == ReasonFreshExec || r == ReasonFreshHandoff }

// Decoy reports whether r is a decoy tripwire.
func (r Reason) Decoy() bool { return r >= ReasonDecoyOpen && r <= ReasonDecoyLink }

// Stops reports whether the tripwire stopped the caller (SIGSTOP) and
// left it to the sensor's judgement (the decoy, burst and fresh-exec
// tripwires) rather than killed it (a tamper tripwire).
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
	// agent itself); for ReasonBurst, the ancestor whose family crossed
	// the threshold (0: the caller itself).
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
	// Programs that have another process start a command (sshd or a
	// container runtime, outside the caller's tree): their arguments are
	// the command.
	"machinectl", "busctl", "gdbus", "ssh", "docker", "podman", "nerdctl", "ctr",
}

// DefaultSpawners are the programs that have the service manager (pid 1)
// start a command: tools whose arguments are looked at, and whose exec by a
// tainted process marks what pid 1 forks within HandoffWindow as the
// caller's (Layer.AddSpawners).
var DefaultSpawners = []string{"systemd-run", "run0"}

// HandoffWindow is how long after a spawner's exec by a tainted process a
// service manager's new child joins its family (HANDOFF_NS).
const HandoffWindow = 2 * time.Second

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

// Stopped is a process a decoy, burst or fresh-exec tripwire stopped,
// waiting for a judgement.
type Stopped struct {
	PID    int
	TimeNS uint64
	Reason Reason
	// Name is the decoy's basename, or the path (cut) of a burst's last
	// change.
	Name string
	// Family is the family root a burst was counted for (0: the process).
	Family int
	// Held are the family roots the stop holds until it is judged: a
	// burst's family root; with the burst tripwire armed, a decoy stop's
	// parent and grandparent (or tainted tree). Their other members are
	// stopped at their next change in a guarded root.
	Held []int
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
	// Ino is the file's inode number, read from the tree's write-open
	// (0 when no write-open by the tree was seen: made executable or
	// renamed only).
	Ino uint64
}

// PreloadFile is the dynamic loader's list of libraries loaded into every
// program it starts (ld.so(8)): a sensor path to a process under an agent,
// by its basename, since the sensor (linked against libyara) is one.
const PreloadFile = "ld.so.preload"

// DefaultBusSockets are the sockets through which a process asks the
// service manager to stop a unit: systemd's own (systemctl as root) and
// the system bus (busctl, gdbus, dbus-send, a script's D-Bus library).
var DefaultBusSockets = []string{"/run/systemd/private", "/run/dbus/system_bus_socket", "/var/run/dbus/system_bus_socket"}

// BusTouch is the last connect of a process under an RMM agent (not the
// agent itself) to a bus socket.
type BusTouch struct {
	TimeNS uint64 // CLOCK_MONOTONIC
	PID    int
	Family int
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

// BurstRoots returns the guarded roots the kernel compares for the burst
// tripwire: absolute, shorter than KeyLen bytes, not "/", at most
// MaxGuardRoots. The others are guarded by the file guard alone.
func BurstRoots(roots []string) []string {
	var out []string
	for _, r := range roots {
		if len(out) == MaxGuardRoots {
			break
		}
		if r == "/" || r == "" || r[0] != '/' || len(r) > KeyLen-1 {
			continue
		}
		out = append(out, r)
	}
	return out
}

// RootID is a directory as the kernel knows it: its superblock's device
// (the kernel's dev_t: major << 20 | minor) and its inode number.
type RootID struct {
	Dev uint32
	Ino uint64
}

// kernelDev encodes a device number the way the kernel keeps it in a
// superblock (MKDEV), not the way stat reports it.
func kernelDev(major, minor uint32) uint32 { return major<<20 | minor&(1<<20-1) }

// mountDev finds the mount with id mntID in a mountinfo table (proc(5):
// "ID PARENT MAJOR:MINOR ROOT POINT ...") and returns its device.
func mountDev(r io.Reader, mntID uint64) (major, minor uint32, ok bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 {
			continue
		}
		if id, err := strconv.ParseUint(f[0], 10, 64); err != nil || id != mntID {
			continue
		}
		maj, min, found := strings.Cut(f[2], ":")
		a, err1 := strconv.ParseUint(maj, 10, 32)
		b, err2 := strconv.ParseUint(min, 10, 32)
		if !found || err1 != nil || err2 != nil {
			return 0, 0, false
		}
		return uint32(a), uint32(b), true
	}
	return 0, 0, false
}
