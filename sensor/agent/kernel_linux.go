package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/kernel"
	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	"github.com/tillwatch/tillwatch/sensor/response"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// wireKernel loads the eBPF layer (sensor/kernel): the process source's
// first choice of feed, the sensor's protection, the taint of catalogued
// agents. With kernel.mode auto a kernel that refuses it leaves the sensor
// on the proc connector, and the missing tamper protection is a health
// event; with required it is an error.
func (s *Sensor) wireKernel(cfg config.Config, src *process.Source, table *proctree.Table, cat *rmm.Catalog) error {
	if cfg.Kernel.Mode == "off" {
		return nil
	}
	log := s.log.With(logkey.Component, "kernel")
	kcfg := kernel.Config{PinDir: cfg.Kernel.PinDir, Enforce: cfg.Mode == "enforce", FreshExec: true, IOUring: cfg.Kernel.AgentIOUring == config.AgentIOUringStop,
		ProcRing: cfg.Kernel.ProcRingBytes, TamperRing: cfg.Kernel.TamperRingBytes, Log: log}
	l, err := kernel.Load(kcfg)
	if err == nil {
		err = s.armKernel(l, cfg)
	}
	if err != nil {
		if cfg.Kernel.Mode == "required" {
			return cfgfile.Usagef("kernel.mode required: %v", err)
		}
		log.Warn("kernel layer unavailable: process events from the proc connector, no tamper protection while the sensor is down; see tillwatch-sensor check", logkey.Error, err)
		s.pipe.Health().Report("kernel", event.HealthDegraded, "tamper protection missing: "+err.Error())
		return nil
	}
	feed := l.ProcessFeed()
	src.SetKernelFeed(feed)
	m := rmm.NewMatcher(cat, runtime.GOOS)
	approved, err := cat.Resolve(cfg.RMM.Approved)
	if err != nil {
		return cfgfile.Usagef("rmm.approved: %v", err)
	}
	w := kernel.NewWatch(kernel.WatchOptions{
		ProcRoot: cfg.Process.ProcRoot,
		// Wait for the writer's exec only when the table is fed by the
		// kernel feed; another backend never advances it.
		FeedAt: func() uint64 {
			if src.Backend() != process.BackendKernel {
				return math.MaxUint64
			}
			return feed.Applied()
		},
		// The nearest catalogued agent above pid, from the table (which
		// keeps exited shells in between), decides.
		Approved: func(pid int) bool {
			self, ok := table.Get(pid)
			if !ok {
				return false
			}
			a := m.FindAgent(append([]proctree.Proc{self}, table.Ancestry(pid, proctree.MaxDepth)...))
			return a != nil && approved[a.Product.ID]
		},
		Drops:   l.RingDrops,
		Health:  s.pipe.Health().Report,
		Layer:   l,
		IsAgent: func(name, exe string) bool { p, _ := m.Process(name, exe); return p != nil },
		InScope: s.inScope,
		Process: func(pid int) *event.Process {
			p, ok := table.Get(pid)
			if !ok {
				return nil
			}
			return process.TableECS(table, p)
		},
		Judge: s.judgeStop,
		Log:   log,
	})
	s.reg.MustRegister(w.Collectors()...)
	s.kern, s.kernCfg = l, kcfg
	s.pipe.AddSource(w)
	s.pipe.AddDetector(w)
	s.kernelWatch = w
	s.reg.MustRegister(ringDropMetrics(l)...)
	s.taintRunningAgents(l, m, cfg.Process.ProcRoot)
	if l.NoBTF() {
		log.Warn("the kernel has no BTF (/sys/kernel/btf/vmlinux): process exits from the kernel carry no exit code")
	}
	log.Info("kernel layer armed", "pin_dir", l.PinDir(), "reused_links", l.Reused(), "enforce", cfg.Mode == "enforce",
		"tracepoints_missing", l.Skipped()) // optional ones this kernel lacks (openat2, fchmodat2, io_uring, pidfd_getfd)
	return nil
}

// armKernel protects this process and names it to the tripwires.
func (s *Sensor) armKernel(l *kernel.Layer, cfg config.Config) error {
	if err := l.Protect(os.Getpid()); err != nil {
		return err
	}
	if err := l.AddTools(kernel.DefaultTools...); err != nil {
		return err
	}
	if err := l.AddBusSockets(kernel.DefaultBusSockets...); err != nil {
		return err
	}
	if err := l.AddSpawners(kernel.DefaultSpawners...); err != nil {
		return err
	}
	if err := l.AddManagers(1); err != nil {
		return err
	}
	names := []string{"tillwatch-sensor", "tillwatch-sensor.service", "tillwatch", strconv.Itoa(os.Getpid()),
		cfg.StateDir, cfg.SpoolDir, cfg.Kernel.PinDir, filepath.Dir(cfg.Kernel.PinDir), "/etc/tillwatch", "/etc/tillwatch/sensor.yaml",
		// Freezing the sensor's cgroup stops it with no signal (and
		// nothing restarts a frozen sensor); cgroup.kill kills it.
		"cgroup.freeze", "freezer.state", "cgroup.kill",
		// A library listed there is loaded into every dynamically linked
		// program, the restarted sensor included.
		kernel.PreloadFile}
	if exe, err := os.Executable(); err == nil {
		names = append(names, exe)
	}
	names = append(names, kernel.LinkPinNames()...)
	for _, n := range names {
		if len(n) < kernel.KeyLen && n != "" && n != "/" {
			if err := l.AddTargets(n); err != nil {
				return fmt.Errorf("naming the sensor to the kernel: %w", err)
			}
		}
	}
	return nil
}

// taintRunningAgents marks the agents already running; agents started
// later are marked at their exec by the watch, and every child inherits
// the mark in the kernel.
func (s *Sensor) taintRunningAgents(l *kernel.Layer, m *rmm.Matcher, procRoot string) {
	des, err := os.ReadDir(procRoot)
	if err != nil {
		return
	}
	for _, de := range des {
		pid, err := strconv.Atoi(de.Name())
		if err != nil || pid <= 1 {
			continue
		}
		exe, _ := os.Readlink(filepath.Join(procRoot, de.Name(), "exe"))
		comm, _ := os.ReadFile(filepath.Join(procRoot, de.Name(), "comm"))
		name := string(comm)
		if len(name) > 0 && name[len(name)-1] == '\n' {
			name = name[:len(name)-1]
		}
		if p, _ := m.Process(name, exe); p != nil {
			if !s.inScope(pid) {
				continue // response.only_under: not ours to guard
			}
			if err := l.TaintAgent(pid); err == nil {
				s.log.Info("RMM agent marked in the kernel", logkey.PID, pid, "product", p.ID)
			}
		}
	}
}

// ringDropMetrics exports the kernel's ring drop counters: records the
// programs could not put in a full ring, counted in a pinned map (so drops
// while no sensor read are counted too).
func ringDropMetrics(l *kernel.Layer) []prometheus.Collector {
	counter := func(ring string, f func(kernel.RingDrops) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "tillwatch_kernel_ring_drops_total",
			Help:        "Records the kernel layer could not put in its ring because it was full (process: exec, fork, exit; tamper: tripwires).",
			ConstLabels: prometheus.Labels{"ring": ring},
		}, func() float64 {
			d, err := l.RingDrops()
			if err != nil {
				return 0
			}
			return float64(f(d))
		})
	}
	return []prometheus.Collector{
		counter("process", func(d kernel.RingDrops) uint64 { return d.Process }),
		counter("tamper", func(d kernel.RingDrops) uint64 { return d.Tamper }),
	}
}

// initPIDNamespace is the inode of the host's PID namespace (the kernel's
// PROC_PID_INIT_INO): the kernel layer names processes by their pids there.
const initPIDNamespace = "pid:[4026531836]"

// armKernelFiles arms the kernel layer's decoy tripwire (the planted
// decoys' names) and burst tripwire (the watched folders as guarded roots)
// once the decoys are planted and the guard is built. It reports whether
// both that apply are armed, and why not. A sensor in a PID namespace of
// its own does not arm them: the kernel reports host pids, which the sensor
// can neither signal nor look up there.
func (s *Sensor) armKernelFiles(cfg config.Config, watch []string) (bool, string) {
	if s.kern == nil {
		return false, "kernel layer not loaded (kernel.mode off or unavailable)"
	}
	if ns, err := os.Readlink("/proc/self/ns/pid"); err != nil || ns != initPIDNamespace {
		return false, "the sensor runs in a PID namespace of its own; the kernel names processes by host pid"
	}
	var names, paths []string
	if s.canaries != nil {
		names, paths = s.canaries.Names(), s.canaries.Paths()
	}
	if err := s.kern.SetDecoys(names...); err != nil {
		return false, "decoy names: " + err.Error()
	}
	// By identity too, for open_by_handle_at(2), which names no path;
	// kept current as decoys are restored (each restore is a new file).
	if err := s.kern.SetDecoyFiles(paths...); err != nil {
		return false, "decoy identities: " + err.Error()
	}
	if s.canaries != nil {
		kern, set, log := s.kern, s.canaries, s.log
		set.OnRewrite(func() {
			if err := kern.SetDecoyFiles(set.Paths()...); err != nil {
				log.Warn("could not tell the kernel layer a restored decoy's identity; a write to it by handle is not stopped until the next restore", logkey.Component, "kernel", logkey.Error, err)
			}
		})
	}
	if s.guard == nil && s.canaries == nil {
		return false, "files.guard and files.canaries are off"
	}
	kcfg := s.kernCfg
	if s.canaries != nil {
		if err := s.kern.AddDecoys(names...); err != nil {
			return false, "decoy names: " + err.Error()
		}
		kcfg.Decoys = true
	}
	if s.guard != nil {
		// Changes under the watched folders only: absolute paths by
		// prefix, relative ones by where they start (the folders'
		// identities, taken here); the host's other bulk writers
		// (builds, package installs) are never counted.
		kcfg.Burst, kcfg.GuardRoots = true, watch
	}
	if err := s.kern.SetConfig(kcfg); err != nil {
		return false, err.Error()
	}
	s.kernCfg = kcfg
	s.log.Info("kernel tripwires on the watched folders armed", logkey.Component, "kernel", "decoys", kcfg.Decoys, "burst", kcfg.Burst,
		"burst_threshold", kernel.DefaultBurstThreshold, "burst_window", kernel.DefaultBurstWindow.String(), "enforce", kcfg.Enforce)
	return kcfg.Decoys && kcfg.Burst, fmt.Sprintf("decoys %v, burst %v", kcfg.Decoys, kcfg.Burst)
}

// burstSettle is how long a burst judgement waits for the file events the
// stopped process caused before its stop to reach the guard (they are
// queued in fanotify; the process, stopped, adds none).
const burstSettle = 150 * time.Millisecond

// judgeStop decides on a process a kernel tripwire stopped. A decoy stop
// is confirmed only if the process acted on a planted decoy (by file
// identity, canary.Set.Judge): a same-named file elsewhere is resumed at
// once. A burst stop is judged by the ransomware scorer: the tree or family
// is killed when its score is at least half its stop threshold (or the
// guard already stopped it), else resumed and not counted again for
// kernel.AllowFor.
func (s *Sensor) judgeStop(ctx context.Context, st kernel.Stopped) kernel.Judgement {
	procRoot := s.cfg.Process.ProcRoot
	if !s.inScope(st.PID) {
		return kernel.Judgement{Why: fmt.Sprintf("outside the response scope (response.only_under %d)", s.cfg.Response.OnlyUnder)}
	}
	switch {
	case st.Reason.Decoy():
		if s.canaries == nil {
			// Nothing to confirm it against: an earlier run's decoy name
			// (another state folder, decoys since turned off). Never kill
			// on a name alone.
			return kernel.Judgement{Why: "a decoy name of an earlier run; no decoys are planted now, so it cannot be confirmed"}
		}
		hit, why := s.canaries.Judge(procRoot, st.PID, st.Name)
		target := 0
		if hit && s.guard != nil {
			// The worker that touched the decoy, and the encryptor
			// or family it works for: the tree the guard would stop.
			if t := s.guard.StopTarget(st.PID); t != st.PID {
				target = t
				why += fmt.Sprintf("; its tree or family root is pid %d", t)
			}
		}
		if hit {
			s.freezeForKill(st.PID, target)
			// The tree dies through the alert's response; put the decoy
			// back once its last writes have landed.
			time.AfterFunc(500*time.Millisecond, func() {
				if err := s.canaries.RestoreAll(); err != nil {
					s.log.Error("restoring decoy files failed", logkey.Error, err)
				}
			})
		}
		return kernel.Judgement{Kill: hit, Why: why, Target: target}
	case st.Reason == kernel.ReasonBurst:
		if s.guard == nil {
			return kernel.Judgement{Why: "no file guard to judge it"}
		}
		select {
		case <-ctx.Done():
		case <-time.After(burstSettle):
		}
		score, threshold, acted := s.guard.Judge(st.PID, st.Family)
		if acted {
			return kernel.Judgement{Kill: true, Why: "the file guard stopped its tree"}
		}
		why := fmt.Sprintf("ransomware score %d, stop threshold %d", score, threshold)
		kill := threshold > 0 && 2*score >= threshold
		target := 0
		if kill && st.Family == 0 {
			// A lone process's burst: end the encryptor it works for
			// (its same-executable root or family), not only itself.
			if t := s.guard.StopTarget(st.PID); t != st.PID {
				target = t
				why += fmt.Sprintf("; its tree or family root is pid %d", t)
			}
		}
		if kill {
			s.freezeForKill(st.PID, target)
		}
		return kernel.Judgement{Kill: kill, Why: why, Target: target}
	case st.Reason == kernel.ReasonHandleWrite:
		// Only a process under an RMM agent is stopped for it: a file
		// opened for writing by handle went past every path check, and
		// no remote-management script has a reason to.
		s.freezeForKill(st.PID, 0)
		return kernel.Judgement{Kill: true, Why: "a process under an RMM agent opened a file by handle for writing, past every path check"}
	case st.Reason == kernel.ReasonIOUring:
		// Only a process under an RMM agent, and only while
		// kernel.agent_io_uring is stop: a ring's file operations pass
		// every path tripwire.
		s.freezeForKill(st.PID, 0)
		return kernel.Judgement{Kill: true, Why: "a process under an RMM agent used io_uring, whose file operations pass every path check"}
	}
	return kernel.Judgement{Kill: true}
}

// inScope reports whether the sensor may act on pid
// (response.only_under: that pid and its descendants; unset: any).
func (s *Sensor) inScope(pid int) bool {
	if s.cfg.Response.OnlyUnder <= 0 {
		return true
	}
	return response.Descends(s.cfg.Process.ProcRoot, pid, s.cfg.Response.OnlyUnder)
}

// freezeForKill stops (SIGSTOP, top-down) the tree a kill verdict on a
// kernel stop ends, at once: the kill itself is the alert's response,
// which goes through the pipeline (30-170 ms under load in the ransomware
// benchmark), and meanwhile the stopped worker's siblings kept encrypting
// (a 4-worker encryptor at full speed lost 200 of 300 files that way
// without permission events). The response's tree kill then ends the
// stopped set. Enforce mode only; target 0 is the stopped process.
func (s *Sensor) freezeForKill(pid, target int) {
	if s.cfg.Mode != "enforce" {
		return
	}
	root := pid
	if target > 0 {
		root = target
	}
	if _, err := response.NewTree(s.cfg.Process.ProcRoot, os.Getpid(), os.Getppid()).Stop(root); err != nil && !errors.Is(err, response.ErrGone) {
		s.log.Warn("could not stop the tree of a process a kernel tripwire stopped before its kill; the kill follows", logkey.Component, "kernel", logkey.PID, root, logkey.Error, err)
	}
}

// standDownKernel runs at a clean stop (the operator's systemctl stop, a
// restart into new rules): the tripwires that stop a process for the
// sensor's judgement (decoy, burst, fresh exec) are turned off and the
// processes they stopped and nobody judged yet are resumed, since no
// judgement comes until the next start: an operator who stops the sensor
// and then clears a folder holding decoys must not find rm frozen. The
// tamper tripwires stay armed (they kill, and need no judgement). A sensor
// that is killed gets here never, so after an attacker's kill every
// tripwire keeps acting until the restart.
//
// A stop asked for right after a process under an RMM agent talked to the
// service manager (systemctl with a glob, a D-Bus call) is not taken for
// the operator's: nothing stands down, and it reports suspect so that the
// next start reports an unclean stop. The operator's way out is
// tillwatch-sensor kernel release.
func (s *Sensor) standDownKernel(ownRestart bool) (suspect bool) {
	if s.kern == nil {
		return false
	}
	if bt, ago, ok := s.kern.LastBusTouch(); ok && ago < busStopWindow && !ownRestart {
		s.log.Error("stop asked for right after a process under an RMM agent talked to the service manager: taken for an attack, not a clean stop; the kernel tripwires stay armed for processes under RMM agents and the next start reports an unclean stop (an operator's stop: tillwatch-sensor kernel release)",
			logkey.Component, "kernel", logkey.PID, bt.PID, "family_root", bt.Family, "ago", ago.Round(time.Millisecond))
		s.holdTaintedOnly()
		return true
	}
	kcfg := s.kernCfg
	kcfg.Decoys, kcfg.Burst, kcfg.FreshExec, kcfg.IOUring = false, false, false, false
	if err := s.kern.SetConfig(kcfg); err != nil {
		s.log.Error("clean stop: could not turn the stopping kernel tripwires off; they act until the next start", logkey.Component, "kernel", logkey.Error, err)
		return
	}
	s.resumeStopped(func(kernel.Stopped) bool { return false })
	s.log.Info("clean stop: decoy, burst and fresh-exec tripwires off until the next start; tamper tripwires stay armed", logkey.Component, "kernel")
	return false
}

// holdTaintedOnly narrows the decoy and burst tripwires to processes under
// RMM agents and resumes the other processes they stopped: the attacker's
// tree stays held until the next start judges it, and nothing of the
// operator's waits for a judgement nobody makes.
func (s *Sensor) holdTaintedOnly() {
	kcfg := s.kernCfg
	kcfg.TaintedOnly = true
	if err := s.kern.SetConfig(kcfg); err != nil {
		s.log.Error("stop: could not narrow the kernel tripwires to processes under agents; they act on every process until the next start", logkey.Component, "kernel", logkey.Error, err)
	}
	s.resumeStopped(func(p kernel.Stopped) bool { _, tainted := s.kern.Tainted(p.PID); return tainted })
}

// resumeStopped resumes, at a stop, every process a stopping tripwire holds
// for a judgement nobody will make until the next start, but those keep
// says stay held.
func (s *Sensor) resumeStopped(keep func(kernel.Stopped) bool) {
	st, err := s.kern.Stopped()
	if err != nil {
		s.log.Error("stop: could not list processes stopped by a kernel tripwire; resume them with kill -CONT", logkey.Component, "kernel", logkey.Error, err)
		return
	}
	for _, p := range st {
		if !p.Reason.Stops() || keep(p) {
			continue
		}
		if err := s.kern.Resume(p, 0); err != nil {
			s.log.Error("stop: could not resume a process stopped by a kernel tripwire; resume it with kill -CONT", logkey.Component, "kernel", "pid", p.PID, logkey.Error, err)
			continue
		}
		s.log.Warn("stop: resumed a process a kernel tripwire stopped and the sensor had not judged", logkey.Component, "kernel", "pid", p.PID, "reason", p.Reason.String())
	}
}

// busStopWindow is how long after a process under an RMM agent connected
// to the service manager's or the system bus's socket a stop is taken for
// its doing.
const busStopWindow = 30 * time.Second
