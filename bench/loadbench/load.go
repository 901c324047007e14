//go:build linux

package main

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

// Options configure one load measurement.
type Options struct {
	Sensor   string // the tillwatch-sensor binary
	Files    int    // files in the tar of the file storm
	Execs    int    // execs of /bin/true in the process storm
	Runs     int    // runs without and with the sensor (alternating)
	Settle   time.Duration
	Dir      string // where the tar and the watched folder go ("" = the temp dir)
	ProcRoot string // "/proc"
	// SensorArgs are extra arguments for the sensor (profiling).
	SensorArgs []string
	// Kernel is the sensor's kernel.mode: off (default) or auto, which
	// adds the eBPF layer (process feed and tripwires); none passes no
	// config file (builds from before the kernel layer).
	Kernel string
	// OpenPermission is the sensor's files.open_permission ("" keeps the
	// default): unless-kernel drops the permission event per open while
	// the kernel tripwires are armed.
	OpenPermission string
}

// Phase is one workload's wall times without and with the sensor.
type Phase struct {
	Name, What    string
	Without, With []time.Duration
}

// Ratio is the median with the sensor over the median without.
func (p Phase) Ratio() float64 {
	w := benchproc.Median(p.Without)
	if w == 0 {
		return 0
	}
	return float64(benchproc.Median(p.With)) / float64(w)
}

// Result is a load measurement.
type Result struct {
	TarFiles, TarDirs int
	TarBytes          int64
	Phases            []Phase // tar, gzip, file storm (tar+gzip), process storm
	// Lost sums, over every run with the sensor, how much each of the
	// sensor's loss counters grew during the workload.
	Lost []benchproc.SeriesDelta
	// Seen sums what the sensor observed during the workloads: file events
	// per action and events through the detectors.
	Seen        []benchproc.SeriesDelta
	Backend     string // process source backend
	FileBackend string
	Args        []string // the sensor's arguments after the binary
	Gzip        string   // the gzip program used
	FS          string   // file system type of the watched folder
}

// lossMetrics are the sensor's counters of dropped or overflowed events.
var lossMetrics = []string{
	"tillwatch_events_dropped_total",         // pipeline queues (per queue)
	"tillwatch_file_events_lost_total",       // fanotify/fsnotify overflow or unwatched folders
	"tillwatch_yara_jobs_dropped_total",      // YARA scan queue full
	"tillwatch_shipper_events_dropped_total", // only with a collector
	"tillwatch_process_overflows_total",      // the kernel's process connector dropped events
}

// seenMetrics show that the sensor was busy with the workload.
var seenMetrics = []string{"tillwatch_file_events_total", `tillwatch_stage_events_total{name="exec-location",result="ok",stage="detector"}`}

// Measure runs the file and process storms o.Runs times without and with a
// running sensor, alternating, after one warm-up run without.
func Measure(ctx context.Context, o Options) (Result, error) {
	var r Result
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if os.Geteuid() != 0 {
		return r, errors.New("needs root: the sensor's process connector and fanotify")
	}
	gz, err := exec.LookPath("gzip")
	if err != nil {
		return r, err
	}
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		return r, err
	}
	r.Gzip = gz
	tmp, err := os.MkdirTemp(o.Dir, "loadbench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	tarPath := filepath.Join(tmp, "files.tar")
	if r.TarFiles, r.TarDirs, r.TarBytes, err = makeTar(tarPath, o.Files); err != nil {
		return r, fmt.Errorf("tar: %w", err)
	}
	watch := filepath.Join(tmp, "watched")
	if err := os.MkdirAll(watch, 0o755); err != nil {
		return r, err
	}
	r.FS = fsType(watch)
	metricsAddr, err := benchproc.FreeAddr()
	if err != nil {
		return r, err
	}
	// Monitor mode: enforce mode would stop the workload if it looked
	// malicious (and, on a shared machine, other people's processes).
	r.Args = append([]string{"run", "--no-collector", "--mode", "monitor", "--metrics-listen", metricsAddr,
		"--state-dir", filepath.Join(tmp, "state"), "--spool", filepath.Join(tmp, "spool"), "--watch", watch}, o.SensorArgs...)
	// The kernel layer (eBPF) is chosen by config: off, or on with a pin
	// dir of the benchmark's own, released after the run.
	kcfg := filepath.Join(tmp, "kernel.yaml")
	// Unique per run: another benchmark or test may have pins of its own.
	pinDir := fmt.Sprintf("/sys/fs/bpf/tillwatch-loadbench-%d", os.Getpid())
	mode := o.Kernel
	if mode == "" {
		mode = "off"
	}
	// "none" passes no config file at all: a build from before the kernel
	// layer refuses the kernel: key, and had no layer to switch off, so it
	// can still be measured side by side with -bin.
	if mode != "none" {
		yml := "kernel:\n  mode: " + mode + "\n  pin_dir: " + pinDir + "\n"
		if o.OpenPermission != "" {
			yml += "files:\n  open_permission: " + o.OpenPermission + "\n"
		}
		if err := os.WriteFile(kcfg, []byte(yml), 0o600); err != nil {
			return r, err
		}
		defer os.RemoveAll(pinDir)
		r.Args = append(r.Args, "-c", kcfg)
	}

	tarP := Phase{Name: "tar", What: fmt.Sprintf("`tar -xf` of %d files into the watched folder", r.TarFiles)}
	gzP := Phase{Name: "gzip", What: "`gzip -r` over the extracted tree (each file compressed, the original removed)"}
	fileP := Phase{Name: "file storm", What: "tar + gzip"}
	procP := Phase{Name: "process storm", What: fmt.Sprintf("%d sequential execs of /bin/true", o.Execs)}
	lost, seen := benchproc.Metrics{}, benchproc.Metrics{}

	workload := func(run string) (tarD, gzD, procD time.Duration, err error) {
		dir := filepath.Join(watch, run)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return 0, 0, 0, err
		}
		t0 := time.Now()
		if out, err := exec.CommandContext(ctx, tarBin, "-xf", tarPath, "-C", dir).CombinedOutput(); err != nil {
			return 0, 0, 0, fmt.Errorf("tar: %v: %s", err, out)
		}
		t1 := time.Now()
		if out, err := exec.CommandContext(ctx, gz, "-r", dir).CombinedOutput(); err != nil {
			return 0, 0, 0, fmt.Errorf("gzip: %v: %s", err, out)
		}
		t2 := time.Now()
		for range o.Execs {
			if err := exec.CommandContext(ctx, "/bin/true").Run(); err != nil {
				return 0, 0, 0, fmt.Errorf("/bin/true: %w", err)
			}
		}
		return t1.Sub(t0), t2.Sub(t1), time.Since(t2), nil
	}
	record := func(with bool, tarD, gzD, procD time.Duration) {
		add := func(p *Phase, d time.Duration) {
			if with {
				p.With = append(p.With, d)
			} else {
				p.Without = append(p.Without, d)
			}
		}
		add(&tarP, tarD)
		add(&gzP, gzD)
		add(&fileP, tarD+gzD)
		add(&procP, procD)
	}

	for i := range o.Runs + 1 {
		for _, with := range []bool{false, true} {
			if i == 0 && with {
				continue // the warm-up run (page cache, binaries) is without the sensor only
			}
			run := fmt.Sprintf("run-%d-%v", i, with)
			if err := settle(ctx, o.Settle); err != nil {
				return r, err
			}
			if !with {
				tarD, gzD, procD, err := workload(run)
				if err != nil {
					return r, err
				}
				if i > 0 {
					record(false, tarD, gzD, procD)
				}
				fmt.Fprintf(os.Stderr, "loadbench: %-20s without sensor: tar %s gzip %s exec %s\n", run, tarD.Round(time.Millisecond), gzD.Round(time.Millisecond), procD.Round(time.Millisecond))
			} else {
				p, err := startSensor(o, r.Args, filepath.Join(tmp, run+".log"), watch)
				if err != nil {
					return r, err
				}
				if err := checkSensorMode(p.Log(), o); err != nil {
					p.Stop(20 * time.Second)
					return r, err
				}
				r.Backend = benchproc.LogField(p.Log(), "process source running", "backend")
				r.FileBackend = "fanotify"
				if strings.Contains(p.Log(), "backend fallback") {
					r.FileBackend = "fsnotify"
				}
				if err := settle(ctx, o.Settle); err != nil {
					p.Stop(20 * time.Second)
					return r, err
				}
				m0, err := benchproc.Scrape("http://" + metricsAddr + "/metrics")
				if err != nil {
					p.Stop(20 * time.Second)
					return r, fmt.Errorf("sensor metrics: %w", err)
				}
				tarD, gzD, procD, err := workload(run)
				if err != nil {
					p.Stop(20 * time.Second)
					return r, err
				}
				// Let the sensor finish what is queued before reading its
				// counters.
				drained(metricsAddr, 10*time.Second)
				m1, err := benchproc.Scrape("http://" + metricsAddr + "/metrics")
				if err != nil {
					p.Stop(20 * time.Second)
					return r, fmt.Errorf("sensor metrics: %w", err)
				}
				if err := p.Stop(20 * time.Second); err != nil {
					return r, fmt.Errorf("sensor: %w", err)
				}
				for _, d := range benchproc.Diff(m0, m1, lossMetrics...) {
					lost[d.Series] += d.Delta
				}
				for _, d := range benchproc.Diff(m0, m1, seenMetrics...) {
					seen[d.Series] += d.Delta
				}
				record(true, tarD, gzD, procD)
				fmt.Fprintf(os.Stderr, "loadbench: %-20s with sensor:    tar %s gzip %s exec %s\n", run, tarD.Round(time.Millisecond), gzD.Round(time.Millisecond), procD.Round(time.Millisecond))
			}
			if err := os.RemoveAll(filepath.Join(watch, run)); err != nil {
				return r, err
			}
		}
	}
	r.Phases = []Phase{fileP, tarP, gzP, procP}
	r.Lost = benchproc.Diff(benchproc.Metrics{}, lost)
	r.Seen = benchproc.Diff(benchproc.Metrics{}, seen)
	return r, nil
}

func settle(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// startSensor starts the sensor and waits until its process source runs
// and both fanotify groups mark the watched folder.
func startSensor(o Options, args []string, logPath, watch string) (*benchproc.Proc, error) {
	p, err := benchproc.Start(o.Sensor, args, logPath)
	if err != nil {
		return nil, err
	}
	if err := p.WaitLog("process source running", 30*time.Second); err != nil {
		p.Stop(20 * time.Second)
		return nil, err
	}
	if err := p.WaitUntil(30*time.Second, "fanotify marks on the watched folder", func() bool {
		if strings.Contains(p.Log(), "backend fallback") {
			return true
		}
		return benchproc.FanotifyReady(o.ProcRoot, p.Pid(), 1)
	}); err != nil {
		p.Stop(20 * time.Second)
		return nil, err
	}
	return p, nil
}

// checkSensorMode refuses a run whose sensor did not set up what was
// asked: with -kernel other than off, the kernel layer armed (auto falls
// back silently otherwise); with -open-permission unless-kernel, no
// permission event per open (which needs the tripwires armed).
func checkSensorMode(log string, o Options) error {
	if o.Kernel != "" && o.Kernel != "off" && o.Kernel != "none" && !strings.Contains(log, "kernel layer armed") {
		return fmt.Errorf("-kernel %s: the sensor did not arm its kernel layer: %s", o.Kernel, benchproc.LogField(log, "kernel layer unavailable", "error"))
	}
	if o.OpenPermission == "unless-kernel" && !strings.Contains(log, "file guard: no permission event per open") {
		return fmt.Errorf("-open-permission unless-kernel: the sensor still asks for a permission event per open (the kernel tripwires are not armed: -kernel auto, as root, in the host's PID namespace)")
	}
	return nil
}

// drained waits until the sensor's file events stop growing for a second
// (it has read what the workload did; its process events never stop, the
// rest of the machine keeps starting processes), at most max.
func drained(addr string, max time.Duration) {
	deadline := time.Now().Add(max)
	last := -1.0
	for time.Now().Before(deadline) {
		m, err := benchproc.Scrape("http://" + addr + "/metrics")
		if err != nil {
			return
		}
		n := m.Sum("tillwatch_file_events_total")
		if n == last {
			return
		}
		last = n
		time.Sleep(time.Second)
	}
}

// fsType names the file system holding path.
func fsType(path string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return "?"
	}
	switch st.Type {
	case 0x01021994:
		return "tmpfs"
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("0x%x", st.Type)
}

// makeTar writes a tar of n small files (text, CSV and JSON of 100 B to
// 2 KiB, compressible as real ones) in nested folders: 100 files per
// folder, 10 folders per top-level folder.
func makeTar(path string, n int) (files, dirs int, size int64, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	rng := rand.New(rand.NewPCG(7, 7))
	now := time.Now()
	dir := func(name string) error {
		dirs++
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: now})
	}
	exts := []string{"txt", "csv", "json", "log"}
	var body []byte
	for i := range n {
		leaf := i / 100
		top := fmt.Sprintf("d%03d", leaf/10)
		sub := fmt.Sprintf("%s/s%02d", top, leaf%10)
		if i%1000 == 0 {
			if err := dir(top); err != nil {
				return 0, 0, 0, err
			}
		}
		if i%100 == 0 {
			if err := dir(sub); err != nil {
				return 0, 0, 0, err
			}
		}
		body = body[:0]
		want := 100 + rng.IntN(2<<10-100)
		for len(body) < want {
			body = strconv.AppendInt(body, int64(rng.IntN(100000)), 10)
			body = append(body, ' ')
			body = append(body, words[rng.IntN(len(words))]...)
			if rng.IntN(8) == 0 {
				body = append(body, '\n')
			} else {
				body = append(body, ',')
			}
		}
		name := fmt.Sprintf("%s/f%05d.%s", sub, i, exts[i%len(exts)])
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: now}); err != nil {
			return 0, 0, 0, err
		}
		if _, err := tw.Write(body); err != nil {
			return 0, 0, 0, err
		}
		files++
		size += int64(len(body))
	}
	if err := tw.Close(); err != nil {
		return 0, 0, 0, err
	}
	if err := bw.Flush(); err != nil {
		return 0, 0, 0, err
	}
	return files, dirs, size, f.Close()
}

var words = strings.Fields("till receipt total cash card refund stock item price shop sale coffee milk bread tax net gross supplier order")
