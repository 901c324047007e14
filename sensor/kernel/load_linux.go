// Loading, pinning and configuring the layer (about 650 lines): the pinned-state rules (reuse a same-version pin,
// remove other versions, write every config map) must read as one sequence, since a restart depends on all of them.

package kernel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Config flags, as the programs read them (CFG_* in bpf/tripwire.c).
const (
	cfgEnforce = 1
	cfgDecoys  = 2
	cfgOff     = 4
	cfgFresh   = 8
	cfgBurst   = 16
	cfgURing   = 32
	cfgTainted = 64 // CFG_TAINTED_ONLY

	toolSpawner = 2 // TOOL_SPAWNER
)

// Where tracefs and bpffs are mounted when missing.
const (
	tracefsDir = "/sys/kernel/tracing"
	bpffsDir   = "/sys/fs/bpf"
)

// attach lists every program with its tracepoint.
// An optional tracepoint is skipped where the kernel lacks it
// (sys_enter_fchmodat2 is new in Linux 6.6, sys_enter_openat2 in 5.6, the io_uring calls are absent
// without CONFIG_IO_URING); a program the attach list does
// not name is a build error caught by forEachProgram.
var attach = []struct {
	prog, group, name string
	optional          bool
}{
	{"tw_execve", "syscalls", "sys_enter_execve", false},
	{"tw_execveat", "syscalls", "sys_enter_execveat", false},
	{"tw_exec", "sched", "sched_process_exec", false},
	{"tw_fork", "sched", "sched_process_fork", false},
	{"tw_exit", "sched", "sched_process_exit", false},
	{"tw_kill", "syscalls", "sys_enter_kill", false},
	{"tw_tkill", "syscalls", "sys_enter_tkill", false},
	{"tw_tgkill", "syscalls", "sys_enter_tgkill", false},
	{"tw_pidfd_open", "syscalls", "sys_enter_pidfd_open", false},
	{"tw_rt_sigqueueinfo", "syscalls", "sys_enter_rt_sigqueueinfo", false},
	{"tw_rt_tgsigqueueinfo", "syscalls", "sys_enter_rt_tgsigqueueinfo", false},
	{"tw_pidfd_send_signal_enter", "syscalls", "sys_enter_pidfd_send_signal", false},
	{"tw_pidfd_send_signal_exit", "syscalls", "sys_exit_pidfd_send_signal", false},
	{"tw_signal_generate", "signal", "signal_generate", false},
	{"tw_signal_deliver", "signal", "signal_deliver", false},
	{"tw_ptrace", "syscalls", "sys_enter_ptrace", false},
	{"tw_process_vm_writev", "syscalls", "sys_enter_process_vm_writev", false},
	{"tw_prlimit64", "syscalls", "sys_enter_prlimit64", false},
	{"tw_sched_setaffinity", "syscalls", "sys_enter_sched_setaffinity", false},
	{"tw_sched_setscheduler", "syscalls", "sys_enter_sched_setscheduler", false},
	{"tw_sched_setparam", "syscalls", "sys_enter_sched_setparam", false},
	{"tw_sched_setattr", "syscalls", "sys_enter_sched_setattr", false},
	{"tw_setpriority", "syscalls", "sys_enter_setpriority", false},
	{"tw_fcntl", "syscalls", "sys_enter_fcntl", false},
	{"tw_ioprio_set", "syscalls", "sys_enter_ioprio_set", false},
	{"tw_pidfd_getfd", "syscalls", "sys_enter_pidfd_getfd", true}, // 5.6 on
	{"tw_bpf", "syscalls", "sys_enter_bpf", false},
	{"tw_connect", "syscalls", "sys_enter_connect", false},
	{"tw_openat", "syscalls", "sys_enter_openat", false},
	{"tw_open", "syscalls", "sys_enter_open", false},
	{"tw_openat2", "syscalls", "sys_enter_openat2", true},
	{"tw_openat_exit", "syscalls", "sys_exit_openat", false},
	{"tw_open_exit", "syscalls", "sys_exit_open", false},
	{"tw_openat2_exit", "syscalls", "sys_exit_openat2", true},
	{"tw_unlinkat", "syscalls", "sys_enter_unlinkat", false},
	{"tw_unlink", "syscalls", "sys_enter_unlink", false},
	{"tw_renameat2", "syscalls", "sys_enter_renameat2", false},
	{"tw_renameat", "syscalls", "sys_enter_renameat", false},
	{"tw_rename", "syscalls", "sys_enter_rename", false},
	{"tw_linkat", "syscalls", "sys_enter_linkat", false},
	{"tw_creat", "syscalls", "sys_enter_creat", false},
	{"tw_chmod", "syscalls", "sys_enter_chmod", false},
	{"tw_fchmodat", "syscalls", "sys_enter_fchmodat", false},
	{"tw_fchmodat2", "syscalls", "sys_enter_fchmodat2", true},
	{"tw_write", "syscalls", "sys_enter_write", false},
	{"tw_truncate", "syscalls", "sys_enter_truncate", false},
	{"tw_open_by_handle_at", "syscalls", "sys_enter_open_by_handle_at", false},
	// A kernel built without io_uring (CONFIG_IO_URING=n) has no ring to
	// pass the tripwires with.
	{"tw_io_uring_setup", "syscalls", "sys_enter_io_uring_setup", true},
	{"tw_io_uring_enter", "syscalls", "sys_enter_io_uring_enter", true},
	{"tw_io_uring_register", "syscalls", "sys_enter_io_uring_register", true},
}

// LinkPinNames are the basenames of the links' pins: while the sensor
// runs its own descriptors keep the programs attached, but a pin removed
// and the sensor then killed (a kill -9 lands) would detach them for the
// restart's second. They are sensor paths to a tainted process.
func LinkPinNames() []string {
	out := make([]string, 0, len(attach))
	for _, a := range attach {
		out = append(out, linkPin(a.prog))
	}
	return out
}

// linkPin is the basename of the pin of prog's link.
func linkPin(prog string) string { return "link_" + prog }

// Layer is the loaded kernel layer. Its pins outlive it: Close releases
// this process's handles and leaves the tripwires armed; Unpin removes
// them (the operator's way out, and tests' cleanup).
type Layer struct {
	cfg     Config
	dir     string // PinDir/<version>
	objs    tripwireObjects
	links   []link.Link
	reused  int  // links found pinned by an earlier run
	skipped int  // optional tracepoints this kernel lacks
	noBTF   bool // loaded without the kernel's BTF: exit codes unknown
	version string
}

// Version is the short digest of the compiled programs: pins live in
// PinDir/<Version>, so an upgraded sensor replaces an older set instead of
// attaching beside it.
func Version() string {
	sum := sha256.Sum256(_TripwireBytes)
	return hex.EncodeToString(sum[:6])
}

// Load mounts tracefs and bpffs if missing, loads the programs, attaches
// them and pins programs' links and maps under cfg.PinDir. Links and maps
// already pinned by an earlier run of the same version are re-used, so a
// restarted sensor never attaches twice and keeps the taint, hostile and
// stopped state the kernel built while it was down. Pins of other versions
// are removed. The configuration flags are written at once.
func Load(cfg Config) (*Layer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ensureMounts(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.PinDir, 0o700); err != nil {
		return nil, fmt.Errorf("kernel: pin dir: %w", err)
	}
	l := &Layer{cfg: cfg, version: Version()}
	l.dir = filepath.Join(cfg.PinDir, l.version)
	if err := removeOtherVersions(cfg.PinDir, l.version); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("kernel: pin dir: %w", err)
	}
	spec, err := loadTripwire()
	if err != nil {
		return nil, err
	}
	for _, m := range spec.Maps {
		if m.Name == "scratch" || m.Name == "args_scratch" || strings.HasPrefix(m.Name, ".") {
			continue // per-CPU scratch space is per program set, not state
		}
		m.Pinning = ebpf.PinByName
	}
	replaced, err := sizeRings(spec, l.dir, cfg)
	if err != nil {
		return nil, err
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: l.dir}}
	// The exit record's code is read with a CO-RE relocation. A kernel
	// without BTF still loads everything: the relocation resolves against
	// an empty spec, the program sees the field missing and reports the
	// code unknown.
	if _, err := btf.LoadKernelSpec(); err != nil || cfg.noKernelBTF {
		empty, err := emptyBTF()
		if err != nil {
			return nil, err
		}
		opts.Programs.KernelTypes = empty
		l.noBTF = true
	}
	// A restart of the same build finds every link pinned: its maps are
	// taken from their pins and the programs are not loaded again, so the
	// verifier does not check them a second time (seconds on a small
	// machine, while the processes a tripwire stopped wait for their
	// judgement); the pinned links keep the programs attached.
	if !replaced && linksPinned(l.dir) {
		if err := spec.LoadAndAssign(&l.objs.tripwireMaps, opts); err == nil {
			if err := l.reuseLinks(); err == nil {
				if err := l.SetConfig(cfg); err != nil {
					l.Close()
					return nil, err
				}
				return l, nil
			}
		}
		l.Close() // and load everything below
		l.objs, l.reused, l.skipped = tripwireObjects{}, 0, 0
	}
	if err := spec.LoadAndAssign(&l.objs, opts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("kernel: loading programs: %w (verifier: %+v)", err, ve)
		}
		return nil, fmt.Errorf("kernel: loading programs: %w", err)
	}
	progs := map[string]*ebpf.Program{}
	if err := forEachProgram(&l.objs.tripwirePrograms, func(name string, p *ebpf.Program) { progs[name] = p }); err != nil {
		l.Close()
		return nil, err
	}
	for _, a := range attach {
		pin := filepath.Join(l.dir, linkPin(a.prog))
		if replaced {
			// The pinned programs write to the rings just replaced:
			// attach this load's programs instead (the old links
			// detach when their pins go).
			if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
				l.Close()
				return nil, fmt.Errorf("kernel: unpinning %s: %w", a.prog, err)
			}
		}
		if old, err := link.LoadPinnedLink(pin, nil); err == nil {
			l.links = append(l.links, old)
			l.reused++
			continue
		}
		lk, err := link.Tracepoint(a.group, a.name, progs[a.prog], nil)
		if err != nil && a.optional && errors.Is(err, os.ErrNotExist) {
			l.skipped++
			continue
		}
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("kernel: attaching %s to %s:%s: %w", a.prog, a.group, a.name, err)
		}
		if err := lk.Pin(pin); err != nil {
			lk.Close()
			l.Close()
			return nil, fmt.Errorf("kernel: pinning %s: %w", a.prog, err)
		}
		l.links = append(l.links, lk)
	}
	if err := l.SetConfig(cfg); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// linksPinned reports whether dir holds a pinned link for every program
// of attach, but optional ones whose tracepoint this kernel lacks.
func linksPinned(dir string) bool {
	for _, a := range attach {
		if _, err := os.Stat(filepath.Join(dir, linkPin(a.prog))); err == nil {
			continue
		}
		if a.optional && !tracepointExists(a.group, a.name) {
			continue
		}
		return false
	}
	return true
}

// tracepointExists reports whether tracefs lists group:name.
func tracepointExists(group, name string) bool {
	_, err := os.Stat(filepath.Join(tracefsDir, "events", group, name))
	return err == nil
}

// reuseLinks opens every pinned link of dir (linksPinned said they are
// there).
func (l *Layer) reuseLinks() error {
	for _, a := range attach {
		pin := filepath.Join(l.dir, linkPin(a.prog))
		lk, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) && a.optional {
			l.skipped++
			continue
		}
		if err != nil {
			return fmt.Errorf("kernel: pinned link %s: %w", a.prog, err)
		}
		l.links = append(l.links, lk)
		l.reused++
	}
	return nil
}

// rings names the ring maps with their configured sizes.
func rings(cfg Config) []struct {
	name string
	size int
} {
	return []struct {
		name string
		size int
	}{{"proc_events", cfg.ProcRing}, {"tamper_events", cfg.TamperRing}}
}

// sizeRings sets the rings' sizes in spec and removes a ring pinned in dir
// with another size (the setting changed since the pins were made; pins of
// another build are removed whole by removeOtherVersions):
// loading beside it would fail, and keeping it would ignore the setting.
// Records still in a removed ring are lost, which the log line says. It
// reports whether any ring was replaced: the pinned links then still run
// programs that write to the old ring, and must be attached again.
func sizeRings(spec *ebpf.CollectionSpec, dir string, cfg Config) (replaced bool, err error) {
	for _, r := range rings(cfg) {
		ms, ok := spec.Maps[r.name]
		if !ok {
			return false, fmt.Errorf("kernel: ring %s missing from the object", r.name)
		}
		ms.MaxEntries = uint32(r.size)
		pin := filepath.Join(dir, r.name)
		old, err := ebpf.LoadPinnedMap(pin, &ebpf.LoadPinOptions{ReadOnly: true})
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("kernel: reading pinned ring %s: %w", pin, err)
		}
		was := old.MaxEntries()
		old.Close()
		if was == ms.MaxEntries {
			continue
		}
		if err := os.Remove(pin); err != nil {
			return false, fmt.Errorf("kernel: replacing pinned ring %s: %w", pin, err)
		}
		cfg.Log.Warn("kernel ring pinned with another size replaced: records it still held while no sensor read it are lost, and the tripwires are attached again",
			logkey.Ring, r.name, logkey.PinnedBytes, was, logkey.Bytes, r.size, logkey.Path, pin)
		replaced = true
	}
	return replaced, nil
}

// RingSizes returns the loaded process and tamper rings' sizes in bytes.
func (l *Layer) RingSizes() (proc, tamper int) {
	return int(l.objs.ProcEvents.MaxEntries()), int(l.objs.TamperEvents.MaxEntries())
}

// forEachProgram walks the generated struct's programs by their ELF names.
func forEachProgram(p *tripwirePrograms, fn func(string, *ebpf.Program)) error {
	for name, prog := range map[string]*ebpf.Program{
		"tw_execve": p.TwExecve, "tw_execveat": p.TwExecveat, "tw_exec": p.TwExec, "tw_fork": p.TwFork,
		"tw_exit": p.TwExit, "tw_kill": p.TwKill, "tw_tkill": p.TwTkill, "tw_tgkill": p.TwTgkill,
		"tw_pidfd_open": p.TwPidfdOpen, "tw_openat": p.TwOpenat, "tw_open": p.TwOpen, "tw_openat2": p.TwOpenat2, "tw_unlinkat": p.TwUnlinkat,
		"tw_unlink": p.TwUnlink, "tw_renameat2": p.TwRenameat2, "tw_renameat": p.TwRenameat,
		"tw_rename": p.TwRename, "tw_linkat": p.TwLinkat, "tw_write": p.TwWrite,
		"tw_creat": p.TwCreat, "tw_chmod": p.TwChmod, "tw_fchmodat": p.TwFchmodat, "tw_fchmodat2": p.TwFchmodat2,
		"tw_truncate": p.TwTruncate, "tw_open_by_handle_at": p.TwOpenByHandleAt,
		"tw_rt_sigqueueinfo": p.TwRtSigqueueinfo, "tw_rt_tgsigqueueinfo": p.TwRtTgsigqueueinfo,
		"tw_pidfd_send_signal_enter": p.TwPidfdSendSignalEnter, "tw_pidfd_send_signal_exit": p.TwPidfdSendSignalExit,
		"tw_signal_generate": p.TwSignalGenerate, "tw_signal_deliver": p.TwSignalDeliver, "tw_ptrace": p.TwPtrace, "tw_process_vm_writev": p.TwProcessVmWritev,
		"tw_prlimit64": p.TwPrlimit64, "tw_sched_setaffinity": p.TwSchedSetaffinity, "tw_sched_setscheduler": p.TwSchedSetscheduler,
		"tw_sched_setparam": p.TwSchedSetparam, "tw_sched_setattr": p.TwSchedSetattr, "tw_setpriority": p.TwSetpriority, "tw_fcntl": p.TwFcntl, "tw_ioprio_set": p.TwIoprioSet,
		"tw_openat_exit": p.TwOpenatExit, "tw_open_exit": p.TwOpenExit, "tw_openat2_exit": p.TwOpenat2Exit, "tw_pidfd_getfd": p.TwPidfdGetfd, "tw_bpf": p.TwBpf, "tw_connect": p.TwConnect,
		"tw_io_uring_setup": p.TwIoUringSetup, "tw_io_uring_enter": p.TwIoUringEnter, "tw_io_uring_register": p.TwIoUringRegister,
	} {
		if prog == nil {
			return fmt.Errorf("kernel: program %s missing from the object", name)
		}
		fn(name, prog)
	}
	return nil
}

// ensureMounts mounts tracefs and bpffs where they are missing: tracepoint
// attachment needs the first, pins the second.
func ensureMounts() error {
	for _, m := range []struct {
		dir, fstype string
		magic       int64
	}{
		{tracefsDir, "tracefs", unix.TRACEFS_MAGIC},
		{bpffsDir, "bpf", unix.BPF_FS_MAGIC},
	} {
		var st unix.Statfs_t
		if err := unix.Statfs(m.dir, &st); err == nil && int64(st.Type) == m.magic {
			continue
		}
		if err := unix.Mount(m.fstype, m.dir, m.fstype, 0, ""); err != nil {
			return fmt.Errorf("kernel: mounting %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	return nil
}

// removeOtherVersions unpins program sets of other versions under root.
func removeOtherVersions(root, keep string) error {
	des, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("kernel: pin dir: %w", err)
	}
	for _, de := range des {
		if !de.IsDir() || de.Name() == keep || len(de.Name()) != 12 {
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, de.Name())); err != nil {
			return fmt.Errorf("kernel: removing old pins: %w", err)
		}
	}
	return nil
}

// Reused reports how many links were found pinned by an earlier run.
func (l *Layer) Reused() int { return l.reused }

// PinDir is the directory holding this version's pins.
func (l *Layer) PinDir() string { return l.dir }

// emptyBTF is a type spec with nothing of the kernel's in it.
func emptyBTF() (*btf.Spec, error) {
	b, err := btf.NewBuilder([]btf.Type{&btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}}, nil)
	if err != nil {
		return nil, fmt.Errorf("kernel: empty BTF: %w", err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		return nil, fmt.Errorf("kernel: empty BTF: %w", err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("kernel: empty BTF: %w", err)
	}
	return spec, nil
}

// NoBTF reports that the kernel has no BTF: the layer runs, exit codes
// are unknown.
func (l *Layer) NoBTF() bool { return l.noBTF }

// Skipped reports how many optional tracepoints this kernel lacks.
func (l *Layer) Skipped() int { return l.skipped }

// SetConfig writes cfg's Enforce, Decoys, FreshExec, IOUring and Burst (with its
// threshold, window and guarded roots) to the kernel. Where the layer is
// pinned and its rings stay as loaded: a cfg without PinDir must not point
// Unpin at the default pin dir (another sensor's).
func (l *Layer) SetConfig(cfg Config) error {
	cfg.PinDir, cfg.ProcRing, cfg.TamperRing = l.cfg.PinDir, l.cfg.ProcRing, l.cfg.TamperRing
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	var f uint32
	if cfg.Enforce {
		f |= cfgEnforce
	}
	if cfg.Decoys {
		f |= cfgDecoys
	}
	if cfg.FreshExec {
		f |= cfgFresh
	}
	if cfg.IOUring {
		f |= cfgURing
	}
	if cfg.TaintedOnly {
		f |= cfgTainted
	}
	if cfg.Burst {
		f |= cfgBurst
		if err := l.setBurst(cfg); err != nil {
			return err
		}
	} else if err := l.setRootIDs(nil, nil); err != nil {
		// Standing down: the roots' identities go with the tripwire.
		return err
	}
	l.cfg = cfg
	return l.setFlags(f)
}

// setBurst writes the burst threshold, window and guarded roots. A root the
// kernel cannot compare (longer than KeyLen-1 bytes, "/", or past the
// MaxGuardRoots-th) is left to the file guard alone (BurstRoots says which
// are compared): counting every path of the host instead would stop its
// honest bulk writers. With no root left the burst tripwire stays off.
func (l *Layer) setBurst(cfg Config) error {
	roots := make([]tripwireBurstRoot, 0, MaxGuardRoots)
	for _, r := range BurstRoots(cfg.GuardRoots) {
		br := tripwireBurstRoot{Len: uint32(len(r))}
		for i, c := range []byte(r) {
			br.Prefix[i] = int8(c)
		}
		roots = append(roots, br)
	}
	for i := range MaxGuardRoots {
		v := tripwireBurstRoot{}
		if i < len(roots) {
			v = roots[i]
		}
		if err := l.objs.BurstRoots.Update(uint32(i), v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("kernel: writing guarded roots: %w", err)
		}
	}
	// Relative paths are placed by the roots' identities: a root that
	// cannot be looked at now (missing, not a directory) is compared by
	// its prefix alone until the tripwire is armed again.
	// The folders above each root are recorded too, with where the
	// root's prefix goes on below them (a path from /shop naming
	// data/... into the root /shop/data).
	var ids []RootID
	above := map[RootID]*[MaxGuardRoots]uint8{}
	for i, r := range BurstRoots(cfg.GuardRoots) {
		id, err := DirID(r)
		if err != nil {
			cfg.Log.Warn("burst tripwire: a watched folder cannot be identified; relative paths in it are not counted in the kernel until the sensor restarts",
				logkey.Path, r, logkey.Error, err)
			continue
		}
		ids = append(ids, id)
		for a := filepath.Dir(r); ; a = filepath.Dir(a) {
			if aid, err := DirID(a); err == nil {
				if above[aid] == nil {
					above[aid] = new([MaxGuardRoots]uint8)
				}
				off := len(a) + 1
				if a == "/" {
					off = 1
				}
				above[aid][i] = uint8(off)
			}
			if a == "/" {
				break
			}
		}
	}
	if err := l.setRootIDs(ids, above); err != nil {
		return err
	}
	bc := tripwireBurstCfg{Threshold: uint32(cfg.BurstThreshold), Nroots: uint32(len(roots)), WindowNs: uint64(cfg.BurstWindow), Nids: uint32(len(ids))}
	if len(roots) == 0 {
		bc.Threshold = 0 // off: nothing the kernel can compare
	}
	if err := l.objs.BurstCfg.Update(uint32(0), bc, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("kernel: writing burst config: %w", err)
	}
	return nil
}

// setRootIDs makes ids the whole content of burst_root_ids, and above
// (a directory above roots -> per root index, where its prefix goes on
// below it) that of burst_above.
func (l *Layer) setRootIDs(ids []RootID, above map[RootID]*[MaxGuardRoots]uint8) error {
	want := make(map[tripwireRootId]tripwireAboveVal, len(above))
	for id, off := range above {
		want[tripwireRootId{Ino: id.Ino, Dev: id.Dev}] = tripwireAboveVal{Off: *off}
	}
	if err := replaceMap(l.objs.BurstAbove, want, "the folders above the guarded roots"); err != nil {
		return err
	}
	return l.setRootIDsOnly(ids)
}

func (l *Layer) setRootIDsOnly(ids []RootID) error {
	want := make(map[tripwireRootId]uint32, len(ids))
	for i, id := range ids {
		want[tripwireRootId{Ino: id.Ino, Dev: id.Dev}] = uint32(i)
	}
	return replaceMap(l.objs.BurstRootIds, want, "guarded roots' identities")
}

// replaceMap makes want the whole content of the hash map m: keys m holds
// that want lacks are deleted, then every entry of want is written. what
// names the content in errors. Every failure to delete or write is
// returned, joined, after the rest was tried: a half-replaced map is worse
// than one entry missing. Not atomic: a program may see the old content,
// the new, or the new without the old until it returns.
func replaceMap[K comparable, V any](m *ebpf.Map, want map[K]V, what string) error {
	var (
		k     K
		v     V
		stale []K
		errs  []error
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("kernel: listing %s: %w", what, err)
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("kernel: removing one of %s: %w", what, err))
		}
	}
	for k, v := range want {
		if err := m.Update(k, v, ebpf.UpdateAny); err != nil {
			errs = append(errs, fmt.Errorf("kernel: writing one of %s: %w", what, err))
		}
	}
	return errors.Join(errs...)
}

// GuardedRootIDs lists the guarded roots' identities the kernel places
// relative paths with (empty while the burst tripwire is off).
func (l *Layer) GuardedRootIDs() ([]RootID, error) {
	var (
		out []RootID
		k   tripwireRootId
		v   uint32
	)
	it := l.objs.BurstRootIds.Iterate()
	for it.Next(&k, &v) {
		out = append(out, RootID{Dev: k.Dev, Ino: k.Ino})
	}
	return out, it.Err()
}

// DirID returns the identity the kernel knows directory dir by: its inode
// number and its superblock's device in the kernel's encoding. The device
// is taken from the mount's line in /proc/self/mountinfo (the superblock's
// own), since stat's device differs from it on btrfs subvolumes; stat's
// is the fallback where the mount is not found.
func DirID(dir string) (RootID, error) { return fileID(dir, unix.S_IFDIR, 0) }

// fileID returns the kernel's identity of p (see DirID), which must be
// of type typ (unix.S_IFDIR, unix.S_IFREG); statFlags are statx's
// (unix.AT_SYMLINK_NOFOLLOW).
func fileID(dir string, typ uint16, statFlags int) (RootID, error) {
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, statFlags, unix.STATX_TYPE|unix.STATX_INO|unix.STATX_MNT_ID, &sx); err != nil {
		return RootID{}, fmt.Errorf("kernel: %s: %w", dir, err)
	}
	if sx.Mode&unix.S_IFMT != typ {
		what := "a directory"
		if typ == unix.S_IFREG {
			what = "a regular file"
		}
		return RootID{}, fmt.Errorf("kernel: %s: not %s", dir, what)
	}
	major, minor := sx.Dev_major, sx.Dev_minor
	if sx.Mask&unix.STATX_MNT_ID != 0 {
		if f, err := os.Open("/proc/self/mountinfo"); err == nil {
			if ma, mi, ok := mountDev(f, sx.Mnt_id); ok {
				major, minor = ma, mi
			}
			f.Close()
		}
	}
	return RootID{Dev: kernelDev(major, minor), Ino: sx.Ino}, nil
}

// Disarm turns every tripwire off until the next SetConfig: the operator's
// clean stop calls it before stopping the sensor, and it stays in force
// while the sensor is down (the flag lives in a pinned map).
func (l *Layer) Disarm() error { return l.setFlags(cfgOff) }

func (l *Layer) setFlags(f uint32) error {
	if err := l.objs.Config.Update(uint32(0), tripwireConfig{Flags: f}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("kernel: writing config: %w", err)
	}
	return nil
}

// Protect adds pid (the sensor) to the protected processes: a signal to it
// or a pidfd on it by a tainted process fires the tripwire. Its threads
// and children created later inherit the protection in the kernel; the
// ones running now are added from /proc.
func (l *Layer) Protect(pid int) error {
	ids := []int{pid}
	if des, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task")); err == nil {
		for _, de := range des {
			if tid, err := strconv.Atoi(de.Name()); err == nil && tid != pid {
				ids = append(ids, tid)
			}
		}
	}
	for _, id := range ids {
		if err := l.objs.ProtectedPids.Update(uint32(id), uint32(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("kernel: protecting %d: %w", id, err)
		}
	}
	return nil
}

// TaintAgent marks pid as a remote-management agent: its children start
// tainted families of their own, inherited at every fork in the kernel.
func (l *Layer) TaintAgent(pid int) error {
	v := tripwireTaint{Family: 0, Flags: 1}
	if err := l.objs.Taint.Update(uint32(pid), v, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("kernel: tainting %d: %w", pid, err)
	}
	return nil
}

// TaintChild marks pid as a member of family fam (the pid of the agent's
// child that started the tree): for descendants that existed before the
// agent was marked.
func (l *Layer) TaintChild(pid, fam int) error {
	v := tripwireTaint{Family: uint32(fam)}
	if err := l.objs.Taint.Update(uint32(pid), v, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("kernel: tainting %d: %w", pid, err)
	}
	return nil
}

// Tainted returns pid's family and whether it is tainted.
func (l *Layer) Tainted(pid int) (family int, ok bool) {
	var v tripwireTaint
	if err := l.objs.Taint.Lookup(uint32(pid), &v); err != nil {
		return 0, false
	}
	return int(v.Family), true
}

// Hostile reports whether family was declared hostile.
func (l *Layer) Hostile(family int) bool {
	var v uint64
	return l.objs.Hostile.Lookup(uint32(family), &v) == nil
}

// HostileMembers lists the live tasks of families declared hostile. The
// kernel kills them at their next exec, open, write, rename or unlink; one
// that makes none of those (stopped by a response the dying sensor did not
// finish, or asleep) would outlive the attack, so the restarted sensor
// judges them at start.
func (l *Layer) HostileMembers() ([]int, error) {
	var out []int
	var pid uint32
	var v tripwireTaint
	it := l.objs.Taint.Iterate()
	for it.Next(&pid, &v) {
		if v.Family != 0 && l.Hostile(int(v.Family)) {
			out = append(out, int(pid))
		}
	}
	return out, it.Err()
}

// reportedBit marks a hostile family's value once the sensor reported it.
// The programs only test a family's presence, never its value, and a new
// poisoning overwrites the value (so it is reported again).
const reportedBit = uint64(1) << 63

// HostileFamilies lists the families declared hostile that no sensor has
// marked reported (MarkReported): the tripwire's own record may have been
// read by a sensor that was killed before its alert was journaled.
func (l *Layer) HostileFamilies() ([]Hostile, error) {
	var out []Hostile
	var fam uint32
	var v uint64
	it := l.objs.Hostile.Iterate()
	for it.Next(&fam, &v) {
		if v&reportedBit == 0 {
			out = append(out, Hostile{Family: int(fam), TimeNS: v})
		}
	}
	return out, it.Err()
}

// MarkReported records that family's attack was reported.
func (l *Layer) MarkReported(family int) error {
	var v uint64
	if err := l.objs.Hostile.Lookup(uint32(family), &v); err != nil {
		return err
	}
	return l.objs.Hostile.Update(uint32(family), v|reportedBit, ebpf.UpdateExist)
}

// AddTools adds basenames of tamper tools.
func (l *Layer) AddTools(names ...string) error { return putKeys(l.objs.Tools, names) }

// AddTargets adds strings that mean the sensor when a tamper tool gets them
// as an argument or a tainted process writes them as a path: its unit and
// binary names, its pid, its config, state and pin paths. A path is also
// matched by its basename, so give distinctive ones. Names longer than
// KeyLen-1 bytes are refused: the kernel compares only whole names.
func (l *Layer) AddTargets(names ...string) error { return putKeys(l.objs.Targets, names) }

// AddDecoys adds decoy basenames to the decoy tripwire.
func (l *Layer) AddDecoys(names ...string) error { return putKeys(l.objs.Decoys, names) }

// SetDecoys makes names the decoy tripwire's whole list: names an earlier
// run armed and this one does not plant (another state folder, decoys
// turned off) are removed, so a namesake is not stopped for a decoy
// nobody guards any more.
func (l *Layer) SetDecoys(names ...string) error {
	want := map[tripwireKey]uint32{}
	for _, n := range names {
		if n == "" || len(n) > KeyLen-1 {
			continue
		}
		want[keyOf(n)] = 1
	}
	if err := replaceMap(l.objs.Decoys, want, "decoys"); err != nil {
		return err
	}
	// A name the kernel cannot compare is still an error, as AddDecoys.
	return putKeys(l.objs.Decoys, names)
}

// SetDecoyFiles makes the planted decoys at paths the whole list of decoys
// known by identity (inode number and device), which is how
// open_by_handle_at(2), naming no path, is matched. Call it again whenever
// a decoy is planted or restored (a restore writes a new file). A path
// that is gone is skipped; every other failure is returned.
func (l *Layer) SetDecoyFiles(paths ...string) error {
	want := map[tripwireRootId]tripwireKey{}
	var errs []error
	for _, p := range paths {
		base := filepath.Base(p)
		if len(base) > KeyLen-1 {
			continue // never compared by name either
		}
		// A decoy is a regular file the sensor planted: a symbolic
		// link at its path is not followed to another file.
		id, err := fileID(p, unix.S_IFREG, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want[tripwireRootId{Ino: id.Ino, Dev: id.Dev}] = keyOf(base)
	}
	if err := replaceMap(l.objs.DecoyIds, want, "decoy identities"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func putKeys(m *ebpf.Map, names []string) error { return putKeysAs(m, names, 1) }

// putKeysAs adds names to m with the value v.
func putKeysAs(m *ebpf.Map, names []string, v uint32) error {
	for _, n := range names {
		if n == "" {
			continue
		}
		if len(n) > KeyLen-1 {
			return fmt.Errorf("kernel: %q is longer than %d bytes, which the kernel never compares", n, KeyLen-1)
		}
		k := tripwireKey{}
		for i, c := range []byte(n) {
			k.S[i] = int8(c)
		}
		if err := m.Update(k, v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("kernel: adding %q: %w", n, err)
		}
	}
	return nil
}

// Stopped lists the processes stopped by a tripwire and not yet judged,
// including those stopped while the sensor was down.
func (l *Layer) Stopped() ([]Stopped, error) {
	var out []Stopped
	var pid uint32
	var v tripwireStopVal
	it := l.objs.Stopped.Iterate()
	for it.Next(&pid, &v) {
		b := make([]byte, 0, KeyLen)
		for _, c := range v.Name {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		st := Stopped{PID: int(pid), TimeNS: v.Ktime, Reason: Reason(v.Reason), Name: string(b), Family: int(v.Family)}
		for _, h := range v.Held {
			if h != 0 {
				st.Held = append(st.Held, int(h))
			}
		}
		out = append(out, st)
	}
	return out, it.Err()
}

// Judged removes pid from the stopped map once the sensor decided.
func (l *Layer) Judged(pid int) error {
	if err := l.objs.Stopped.Delete(uint32(pid)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// Resume lets a process a tripwire stopped go on: it is judged honest. A
// burst stop's process and family root are not counted again for allow
// (AllowFor when 0). The family roots the stop holds (a burst's family
// root, a decoy stop's parent and grandparent) are released, and the
// process gets SIGCONT. A decoy stop (a same-named file elsewhere) passes
// allow 0.
func (l *Layer) Resume(s Stopped, allow time.Duration) error {
	var errs []error
	// The held roots are read from the stopped map: a Stopped built from
	// the tamper ring's record does not carry them.
	var v tripwireStopVal
	if err := l.objs.Stopped.Lookup(uint32(s.PID), &v); err == nil {
		for _, h := range v.Held {
			if h != 0 && int(h) != s.Family {
				errs = append(errs, l.Unhold(int(h)))
			}
		}
	}
	if s.Reason == ReasonBurst {
		if allow <= 0 {
			allow = AllowFor
		}
		until := monotonicNS() + uint64(allow)
		for _, p := range []int{s.PID, s.Family} {
			if p > 0 {
				if err := l.objs.BurstAllowed.Update(uint32(p), until, ebpf.UpdateAny); err != nil {
					errs = append(errs, fmt.Errorf("kernel: allowing %d: %w", p, err))
				}
			}
		}
		if s.Family > 0 {
			errs = append(errs, l.Unhold(s.Family))
		}
	}
	errs = append(errs, l.Judged(s.PID))
	if err := unix.Kill(s.PID, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("kernel: resuming %d: %w", s.PID, err))
	}
	return errors.Join(errs...)
}

// Unhold releases a family root held by a burst stop: its workers are no
// longer stopped at their next change.
func (l *Layer) Unhold(family int) error {
	if err := l.objs.BurstHeld.Delete(uint32(family)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("kernel: releasing family %d: %w", family, err)
	}
	return nil
}

// Held reports whether family is held by a burst stop.
func (l *Layer) Held(family int) bool {
	var v uint64
	return l.objs.BurstHeld.Lookup(uint32(family), &v) == nil
}

// AddSpawners adds programs that have a service manager start a command
// (systemd-run, run0): tamper tools whose arguments are looked at like the
// others', and whose exec by a tainted process makes what a manager forks
// in the next moments (HandoffWindow) join the caller's family.
func (l *Layer) AddSpawners(names ...string) error {
	return putKeysAs(l.objs.Tools, names, toolSpawner)
}

// AddManagers names the service managers whose children a spawner's
// hand-off reaches: pid 1 on a host (a test's stand-in elsewhere).
func (l *Layer) AddManagers(pids ...int) error {
	for _, p := range pids {
		if err := l.objs.Managers.Update(uint32(p), uint32(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("kernel: naming manager %d: %w", p, err)
		}
	}
	return nil
}

// AddBusSockets names the service manager's and the system bus's sockets:
// a process under an agent connecting to one is recorded (LastBusTouch).
func (l *Layer) AddBusSockets(paths ...string) error { return putKeys(l.objs.BusSockets, paths) }

// LastBusTouch returns the last connect of a process under an agent to a
// bus socket, and how long ago it was; false if none was recorded.
func (l *Layer) LastBusTouch() (BusTouch, time.Duration, bool) {
	var v tripwireBusTouchVal
	if err := l.objs.BusTouch.Lookup(uint32(0), &v); err != nil || v.Ktime == 0 {
		return BusTouch{}, 0, false
	}
	now := monotonicNS()
	var ago time.Duration
	if now > v.Ktime {
		ago = time.Duration(now - v.Ktime)
	}
	return BusTouch{TimeNS: v.Ktime, PID: int(v.Pid), Family: int(v.Family)}, ago, true
}

// monotonicNS is CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns.
func monotonicNS() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// Close releases this process's handles; pinned links keep the programs
// attached and pinned maps keep their state.
func (l *Layer) Close() error {
	var errs []error
	for _, lk := range l.links {
		errs = append(errs, lk.Close())
	}
	l.links = nil
	errs = append(errs, l.objs.Close())
	return errors.Join(errs...)
}

// Unpin detaches every program and removes the pins (this version's and
// any other under PinDir), then closes the layer. The tripwires are gone
// once it returns.
func (l *Layer) Unpin() error {
	var errs []error
	for _, lk := range l.links {
		errs = append(errs, lk.Unpin())
	}
	errs = append(errs, l.Close())
	errs = append(errs, Release(l.cfg.PinDir))
	return errors.Join(errs...)
}

// Release removes every pin under pinDir without loading anything: the
// operator's way out (`tillwatch-sensor kernel release`) when the sensor
// will not start. Programs detach when their last pin goes.
func Release(pinDir string) error {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	if err := os.RemoveAll(pinDir); err != nil {
		return fmt.Errorf("kernel: removing %s: %w", pinDir, err)
	}
	return nil
}

// Fresh returns what the kernel recorded of the file named base (a
// basename) that a tainted process wrote, renamed into place or made
// executable, if it is still in the fresh map.
func (l *Layer) Fresh(base string) (FreshFile, bool) {
	if base == "" || len(base) > KeyLen-1 {
		return FreshFile{}, false
	}
	var v tripwireFreshVal
	if err := l.objs.Fresh.Lookup(keyOf(base), &v); err != nil {
		return FreshFile{}, false
	}
	b := make([]byte, 0, len(v.Comm))
	for _, c := range v.Comm {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return FreshFile{Name: base, TimeNS: v.Ktime, Writer: int(v.Writer), Family: int(v.Family), How: FreshHow(v.How), Comm: string(b), Ino: v.Ino}, true
}

// Forget removes base from the fresh map: a file the sensor let run is
// not stopped again at its next exec (until a tainted process writes it
// again).
func (l *Layer) Forget(base string) error {
	if base == "" || len(base) > KeyLen-1 {
		return nil
	}
	if err := l.objs.Fresh.Delete(keyOf(base)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("kernel: forgetting %q: %w", base, err)
	}
	return nil
}

func keyOf(s string) tripwireKey {
	k := tripwireKey{}
	for i, c := range []byte(s) {
		if i >= KeyLen-1 {
			break
		}
		k.S[i] = int8(c)
	}
	return k
}

// RingDrops returns how many records the kernel could not put in the
// process and the tamper ring because they were full, summed over CPUs,
// since the layer was first loaded (the counters are pinned).
func (l *Layer) RingDrops() (RingDrops, error) {
	var d RingDrops
	for i, dst := range []*uint64{&d.Process, &d.Tamper} {
		var per []uint64
		if err := l.objs.RingDrops.Lookup(uint32(i), &per); err != nil {
			return RingDrops{}, fmt.Errorf("kernel: reading ring drops: %w", err)
		}
		for _, n := range per {
			*dst += n
		}
	}
	return d, nil
}
