package agent

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/kernel"
	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
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
	l, err := kernel.Load(kernel.Config{PinDir: cfg.Kernel.PinDir, Enforce: cfg.Mode == "enforce", FreshExec: true})
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
		Process: func(pid int) *event.Process {
			p, ok := table.Get(pid)
			if !ok {
				return nil
			}
			return process.TableECS(table, p)
		},
		Log: log,
	})
	s.pipe.AddSource(w)
	s.pipe.AddDetector(w)
	s.kernelWatch = w
	s.reg.MustRegister(ringDropMetrics(l)...)
	s.taintRunningAgents(l, m, cfg.Process.ProcRoot)
	if l.NoBTF() {
		log.Warn("the kernel has no BTF (/sys/kernel/btf/vmlinux): process exits from the kernel carry no exit code")
	}
	log.Info("kernel layer armed", "pin_dir", l.PinDir(), "reused_links", l.Reused(), "enforce", cfg.Mode == "enforce")
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
	names := []string{"tillwatch-sensor", "tillwatch-sensor.service", "tillwatch", strconv.Itoa(os.Getpid()),
		cfg.StateDir, cfg.SpoolDir, cfg.Kernel.PinDir, filepath.Dir(cfg.Kernel.PinDir), "/etc/tillwatch", "/etc/tillwatch/sensor.yaml"}
	if exe, err := os.Executable(); err == nil {
		names = append(names, exe)
	}
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
