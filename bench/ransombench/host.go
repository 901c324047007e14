//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
	"github.com/tillwatch/tillwatch/sensor/kernel"
)

// Placements of the sensor (-placement).
const (
	// placementNamespace runs the benchmark, its sensor, the simulator
	// and the workloads in a PID namespace of their own: the sensor's
	// detectors see and can kill only them, and its kernel layer does not
	// arm the decoy and burst tripwires (the kernel reports host pids).
	placementNamespace = "namespace"
	// placementHost runs the sensor in the host's PID namespace with
	// kernel.mode required: the decoy and burst tripwires are armed, and
	// files.open_permission (-open-permission) decides whether the file
	// guard still asks for a permission event on every open.
	placementHost = "host"
)

// pinPrefix starts the pin dir of every sensor the benchmark starts: the
// benchmark's pid and the sensor's number follow, so no two runs (or
// another helper's sensor) share pins.
const pinPrefix = "/sys/fs/bpf/tillwatch-ransombench-"

// initPIDNamespace is the host's PID namespace (PROC_PID_INIT_INO).
const initPIDNamespace = "pid:[4026531836]"

// Lines of the sensor's start-up log that say what it armed
// (sensor/agent files.go and kernel_linux.go).
const (
	logTripwires   = "kernel tripwires on the watched folders armed"
	logNoOpenPerm  = "file guard: no permission event per open"
	logOpenPerm    = "file guard: permission event on every open"
	logRMMMarked   = "RMM agent marked in the kernel"
	logStoodDown   = "clean stop: decoy, burst and fresh-exec tripwires off"
	logLayerArmed  = "kernel layer armed"
	logScoped      = "response confined to one process tree"
	stoppedTimeout = 10 * time.Second
)

func (b *bench) checkPlacement() error {
	switch b.placement {
	case placementNamespace:
		if b.openPerm != "always" {
			return fmt.Errorf("-open-permission %s needs -placement host: in the namespace the kernel tripwires are not armed, so the sensor keeps its permission events", b.openPerm)
		}
	case placementHost:
		if b.openPerm != "always" && b.openPerm != "unless-kernel" {
			return fmt.Errorf("-open-permission %q: want always or unless-kernel", b.openPerm)
		}
	default:
		return fmt.Errorf("-placement %q: want namespace or host", b.placement)
	}
	return nil
}

// hostPreflight refuses a host placement from inside a PID namespace
// (the sensor would not arm the tripwires it is meant to measure).
func hostPreflight() error {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return err
	}
	if ns != initPIDNamespace {
		return errors.New("-placement host must run in the host's PID namespace (this one is " + ns + ")")
	}
	return nil
}

// hostConfig is the host-placed sensor's configuration. kernel.mode
// required with a pin dir of its own (nobody else's pins are touched);
// response.only_under this benchmark's pid: the sensor sees every process
// of the machine and, in enforce mode, would act on any its RMM rules or
// kernel tripwires judge (the first host run without it raised kill
// alerts on another session's stand-in RMM agent); YARA off: on the host
// it would scan every exec of the machine, other people's builds
// included, and no ransomware stop depends on it.
func (b *bench) hostConfig(decoys bool, pinDir string) string {
	return fmt.Sprintf("files:\n  canaries: %v\n  open_permission: %s\nkernel:\n  mode: required\n  pin_dir: %s\nyara:\n  enabled: false\nresponse:\n  only_under: %d\n",
		decoys, b.openPerm, pinDir, os.Getpid())
}

// checkHost reads the host-placed sensor's start-up log: the layer is
// armed, the file guard runs the open-permission mode the product chooses
// for this configuration (unless-kernel drops the permission events only
// when both decoy and burst tripwires are armed, so never with decoys off)
// and no RMM agent of the machine was marked: an enforce-mode sensor on
// the host acts on an agent's tree (its RMM rules and fresh-exec tripwire
// kill), so a run next to one is refused rather than risked.
func (s *sensor) checkHost(decoys bool, openPerm string) error {
	log := s.logText()
	if !strings.Contains(log, logScoped) {
		return fmt.Errorf("the sensor did not confine its response to this benchmark (%q missing): %s", logScoped, log)
	}
	if !strings.Contains(log, logLayerArmed) {
		return fmt.Errorf("the sensor did not arm its kernel layer: %s", log)
	}
	if strings.Contains(log, logRMMMarked) {
		return fmt.Errorf("an RMM agent runs on this machine (%s); a host-placed enforce-mode sensor would act on its tree: use -placement namespace", logLine(log, logRMMMarked))
	}
	if decoys && !strings.Contains(log, logTripwires) {
		return fmt.Errorf("the kernel's decoy and burst tripwires were not armed: %s", log)
	}
	switch {
	case strings.Contains(log, logNoOpenPerm):
		s.permEvents = false
	case strings.Contains(log, logOpenPerm):
		s.permEvents = true
	default:
		return fmt.Errorf("the sensor's log does not say whether it asks for permission events: %s", log)
	}
	if want := !(decoys && openPerm == "unless-kernel"); s.permEvents != want {
		return fmt.Errorf("permission events %v, want %v (decoys %v, open_permission %s): %s", s.permEvents, want, decoys, openPerm, logLine(log, "file guard:"))
	}
	return nil
}

// releasePins removes the sensor's pin dir (only its own) after its
// clean stop, and says if the stop did not stand the tripwires down.
func (s *sensor) releasePins() {
	if !strings.HasPrefix(s.pinDir, pinPrefix) {
		return
	}
	if log := s.logText(); !strings.Contains(log, logStoodDown) {
		fmt.Fprintf(os.Stderr, "ransombench: the sensor did not log its clean stop (%q); releasing its pins anyway\n", logStoodDown)
	}
	if err := kernel.Release(s.pinDir); err != nil {
		fmt.Fprintf(os.Stderr, "ransombench: remove the pins %s: %v (tillwatch-sensor kernel release --pin-dir %s)\n", s.pinDir, err, s.pinDir)
	}
}

func logLine(log, substr string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// stoppedProc is a process in the stopped state (T).
type stoppedProc struct {
	pid, pgid int
	cmd       string
}

// stoppedProcs lists the processes in state T (stopped by a signal; not t,
// traced), with their process group and command line.
func stoppedProcs() []stoppedProc {
	des, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []stoppedProc
	for _, de := range des {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", de.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] != "T" {
			continue
		}
		pgid, _ := strconv.Atoi(f[2])
		cmd, _ := os.ReadFile(filepath.Join("/proc", de.Name(), "cmdline"))
		out = append(out, stoppedProc{pid: pid, pgid: pgid, cmd: strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))})
	}
	return out
}

// stoppedInGroup reports whether a process of group pgid is stopped.
func stoppedInGroup(pgid int) bool {
	for _, p := range stoppedProcs() {
		if p.pgid == pgid {
			return true
		}
	}
	return false
}

// checkStopped runs at the end of a host placement: processes of this
// benchmark left stopped (their command line names its temporary folder)
// are killed; any other stopped process of the machine is listed, never
// touched.
func (b *bench) checkStopped() {
	for _, p := range stoppedProcs() {
		if b.tmp != "" && strings.Contains(p.cmd, b.tmp) {
			fmt.Fprintf(os.Stderr, "ransombench: process %d of this benchmark was left stopped, killed: %s\n", p.pid, p.cmd)
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
			continue
		}
		fmt.Fprintf(os.Stderr, "ransombench: note: process %d is stopped (not this benchmark's, left alone): %s\n", p.pid, p.cmd)
	}
}

// logJudgedHonest is the sensor's line for a kernel stop judged honest
// and resumed (sensor/kernel watch.go).
const logJudgedHonest = "process stopped by a kernel tripwire judged honest and resumed"

// holdWatch notices a process group that stays stopped: a kernel stop
// that no judgement resumed and no response killed (a family root the
// responder may not touch, such as the sensor's parent, this benchmark).
// It looks at most every 250 ms (a scan of /proc).
type holdWatch struct {
	pgid  int
	on    bool
	last  time.Time
	since time.Time
}

func newHoldWatch(pgid int, on bool) *holdWatch { return &holdWatch{pgid: pgid, on: on} }

// check returns when the group was first seen stopped and whether it has
// stayed stopped for stoppedTimeout.
func (h *holdWatch) check() (time.Time, bool) {
	if !h.on || time.Since(h.last) < 250*time.Millisecond {
		return time.Time{}, false
	}
	h.last = time.Now()
	if !stoppedInGroup(h.pgid) {
		h.since = time.Time{}
		return time.Time{}, false
	}
	if h.since.IsZero() {
		h.since = h.last
	}
	return h.since, time.Since(h.since) >= stoppedTimeout
}

// kernelNote is the per-run line's note on a host-placed sensor.
func (b *bench) kernelNote(r result) string {
	if b.placement != placementHost {
		return ""
	}
	perm := "off"
	if r.permEvents {
		perm = "on"
	}
	note := fmt.Sprintf(" [permission events %s, kernel stops resumed %d", perm, r.kernelStops)
	if r.foreign > 0 {
		note += fmt.Sprintf(", %d alerts on other processes of the machine (not acted on)", r.foreign)
	}
	if r.held {
		note += ", held in the kernel and killed by the benchmark"
	}
	return note + "]"
}

// hostHeader opens the section of a host placement.
func (b *bench) hostHeader(w *strings.Builder, kernelRelease string) {
	fmt.Fprintf(w, `%s

Measured by bench/ransombench with `+"`-placement host -open-permission %s`"+` (`+"`go run ./bench/ransombench %s`"+`, as root) on
%s: %d CPU cores (shared with other work while measured; load average %s at the end), Linux %s, %s.
The sensor runs `+"`tillwatch-sensor run --no-collector --mode enforce --watch CORPUS`"+` in the **host's** PID namespace with
`+"`kernel.mode: required`"+` (a pin dir of its own per run, `+"`%sPID-N`"+`, removed after the sensor's clean stop),
`+"`files.open_permission: %s`"+` and `+"`yara.enabled: false`"+` (on the host YARA would scan every exec of the machine; no
ransomware stop depends on it); the process source takes the kernel feed. So the kernel layer's decoy tripwire (by
basename, the per-install decoy names) and burst tripwire (32 write-opens, renames or unlinks within 1 s by one
process or its parent's or grandparent's family, **under the watched corpus only**: absolute paths by prefix,
relative ones by the folder they start in) are armed.
With `+"`unless-kernel`"+` the file guard drops its permission event per open only while both are armed, so the
"decoys off" rows keep the permission events in both settings (the benchmark checks the sensor's start-up log for
which is in force). `+"`response.only_under`"+` confines the sensor's actions to the benchmark's own processes (it sees
the whole machine: alerts on other processes are counted, not listed, and never acted on). The simulator opens, renames and
unlinks relative to a folder descriptor (never an absolute path), which the burst tripwire counts by the folder's
identity. Corpus: %d real files (%.1f MiB) in %d folders; each
configuration ran %d times; the columns are those of the namespace section above ("Ransomware: files lost").
`, b.heading(), b.openPerm, strings.Join(os.Args[1:], " "), time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(),
		benchproc.LoadAvg("/proc"), kernelRelease, runtime.Version(), pinPrefix, b.openPerm, b.nfiles, float64(b.bytes)/(1<<20), b.ndirs, b.runs)
}

// onInterrupt makes an interrupted host placement (SIGINT, SIGTERM) clean
// up like a finished one: the running sensor stopped with SIGTERM (its
// tripwires stand down) and its pins removed, the benchmark's processes
// killed, its temporary folder removed.
func (b *bench) onInterrupt() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		b.mu.Lock()
		if b.current != nil {
			b.current.stop()
		}
		if b.tmp != "" {
			for _, p := range procsNaming(b.tmp) {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
		b.checkStopped()
		if b.tmp != "" && !b.keep {
			_ = os.RemoveAll(b.tmp)
		}
		fmt.Fprintln(os.Stderr, "ransombench: interrupted; sensor stopped, pins and temporary folder removed")
		os.Exit(130)
	}()
}

// procsNaming lists the processes whose command line holds s.
func procsNaming(s string) []int {
	des, _ := os.ReadDir("/proc")
	var out []int
	for _, de := range des {
		pid, err := strconv.Atoi(de.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if cmd, err := os.ReadFile(filepath.Join("/proc", de.Name(), "cmdline")); err == nil && bytes.Contains(cmd, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}
