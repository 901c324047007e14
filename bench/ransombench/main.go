//go:build linux

// Command ransombench measures how many files the sensor loses to the
// ransomware simulator, and whether it stops benign programs, and writes
// the "## Ransomware: files lost" section of docs/benchmarks.md. Run with
// `make bench-ransomware` (as root: the sensor needs fanotify and kill).
//
// For every simulator mode, at full speed and at --rate 400, with 1 and 4
// workers, with decoys on and off (files.canaries: false, so the behaviour
// scoring is measured alone: the simulator walks files in name order and
// reaches the decoy named to sort first before any real file), it starts
// `tillwatch-sensor run --mode enforce --watch CORPUS`, waits until every
// folder of the corpus carries both fanotify marks, runs
// `tillwatch simulate ransomware`, and counts the files that are changed or
// gone against a SHA-256 manifest taken before the sensor first started
// (decoys are not in it). The corpus is then restored with --undo and
// checked against the manifest again.
//
// The adaptive behaviours (-adaptive: one-file worker families, openssl,
// gpg and dd loops, rename-over, reverse and size order, an encryptor named
// gzip) run at both speeds with decoys on and off, each with its own table
// row. The benign workloads include git, encrypted backups, rsync, atomic
// saves and a package install; a workload whose tool is not installed is
// listed as not run, with the tool's name.
//
// Placement (-placement): by default the benchmark re-executes itself in
// a PID namespace of its own with the sensor, where the kernel layer's
// decoy and burst tripwires are not armed. -placement host runs the
// sensor in the host's PID namespace with kernel.mode required (a pin dir
// of its own per run, released after the sensor's clean stop) and
// files.open_permission from -open-permission, confined by
// response.only_under to this benchmark's own processes (host.go); each
// open-permission setting writes a section of its own.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	sim "github.com/tillwatch/tillwatch/sim/ransomware"

	"github.com/tillwatch/tillwatch/bench/internal/benchdoc"
	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

func main() {
	defer benchproc.KeepNoKernelPins()()
	out := flag.String("out", "docs/benchmarks.md", "markdown file whose ransomware section is replaced")
	bin := flag.String("bin", "bin", "folder holding tillwatch and tillwatch-sensor (make build)")
	runs := flag.Int("runs", 3, "runs of every configuration (medians are reported)")
	rate := flag.Float64("rate", 400, "files per second of the paced runs")
	modes := flag.String("modes", strings.Join(sim.Modes, ","), "simulator modes")
	adaptive := flag.String("adaptive", "all", "adaptive behaviours to run (comma-separated names of the table, all or none)")
	nfiles := flag.Int("files", 1000, "files in the corpus")
	benignOnly := flag.Bool("benign-only", false, "only the benign workloads")
	workloads := flag.String("workloads", "", "benign workloads to run (comma-separated names of the table; empty: all)")
	noBenign := flag.Bool("no-benign", false, "skip the benign workloads")
	decoys := flag.String("decoys", "on,off", "decoy settings to run: on, off or both")
	settle := flag.Duration("settle", 0, "wait after the sensor's marks are in place")
	keep := flag.Bool("keep", false, "keep the temp dir (debugging)")
	placement := flag.String("placement", placementNamespace, "where the enforce-mode sensor runs: namespace (a PID namespace of its own with the benchmark; the kernel's decoy and burst tripwires are not armed there) or host (the host's PID namespace, kernel.mode required with a pin dir of its own: the tripwires armed)")
	openPerm := flag.String("open-permission", "always", "the sensor's files.open_permission with -placement host: always (a fanotify permission event on every open) or unless-kernel (none while the kernel's decoy and burst tripwires are armed)")
	helper := flag.String("helper", "", "internal: run a benign workload (sqlite)")
	db := flag.String("db", "", "internal: helper database")
	n := flag.Int("n", 0, "internal: helper row count")
	flag.Parse()
	if *helper != "" {
		if err := runHelper(*helper, *db, *n); err != nil {
			fmt.Fprintln(os.Stderr, "ransombench helper: "+err.Error())
			os.Exit(1)
		}
		return
	}
	b := &bench{bin: *bin, runs: *runs, rate: *rate, modes: splitList(*modes), noBenign: *noBenign,
		decoys: strings.Split(*decoys, ","), settle: *settle, keep: *keep, wantFiles: *nfiles, onlyWorkloads: splitList(*workloads),
		placement: *placement, openPerm: *openPerm}
	if err := b.checkPlacement(); err != nil {
		fmt.Fprintln(os.Stderr, "ransombench: "+err.Error())
		os.Exit(2)
	}
	switch *adaptive {
	case "all":
		b.adaptive = adaptiveVariants
	case "none", "":
	default:
		for _, name := range strings.Split(*adaptive, ",") {
			i := slices.IndexFunc(adaptiveVariants, func(v variant) bool { return v.name == name })
			if i < 0 {
				fmt.Fprintf(os.Stderr, "ransombench: -adaptive %q: not a variant (want all, none or names of %v)\n", name, variantNames())
				os.Exit(2)
			}
			b.adaptive = append(b.adaptive, adaptiveVariants[i])
		}
	}
	if err := b.run(*out, *benignOnly); err != nil {
		fmt.Fprintln(os.Stderr, "ransombench: "+err.Error())
		os.Exit(1)
	}
}

type bench struct {
	bin      string
	runs     int
	rate     float64
	modes    []string
	tmp      string
	corpus   string
	manifest map[string]string // relative path -> sha256
	nfiles   int
	ndirs    int
	bytes    int64
	noBenign bool
	decoys   []string
	settle   time.Duration
	keep     bool
	helper   string // a copy of this program: its own executable, so its own process tree
	// wantFiles is the corpus size asked for; adaptive the adaptive
	// behaviours to run.
	wantFiles     int
	adaptive      []variant
	onlyWorkloads []string // benign workloads to run (nil: all)
	// placement is where the sensor runs (placementNamespace or
	// placementHost, host.go); openPerm its files.open_permission there.
	placement, openPerm string
	sensors             int // sensors started (numbers their pin dirs)
	// current is the running sensor (host placement: stopped on an
	// interrupt), under mu.
	mu      sync.Mutex
	current *sensor
}

// variant is an adaptive behaviour of the simulator: a mode driven through
// other processes or tools, or an order or a name an encryptor hides behind.
type variant struct {
	name, desc string
	mode       string
	workers    int
	args       string // extra simulator arguments, space-separated
}

// adaptiveVariants are the behaviours of encryptors that adapt: one-file
// workers, the machine's own tools, other orders, a benign name.
var adaptiveVariants = []variant{
	{name: "family", desc: "a family of one-file workers: the simulator re-executed per file, 4 at a time, each renaming its ciphertext over the original", mode: sim.ModeFamily, workers: 4},
	{name: "xargs-openssl", desc: "`xargs -P4 sh -c 'openssl enc … -in F -out F.t && mv F.t F'`", mode: sim.ModeOpenSSLLoop, workers: 4},
	{name: "openssl-loop", desc: "`while read f; do openssl enc … && mv …; done` (one shell)", mode: sim.ModeOpenSSLLoop, workers: 1},
	{name: "gpg-loop", desc: "`gpg -c -o F.t F && mv F.t F` in a shell loop", mode: sim.ModeGPGLoop, workers: 1},
	{name: "dd-loop", desc: "`dd if=/dev/urandom of=F conv=notrunc` in a shell loop (a wiper)", mode: sim.ModeDDLoop, workers: 1},
	{name: "renameover", desc: "one process: read F, write F.t, rename F.t over F", mode: sim.ModeRenameOver, workers: 1},
	{name: "reverse", desc: "in place, reverse name order (meets the `zz_…` decoy first)", mode: sim.ModeInPlace, workers: 1, args: "--order reverse"},
	{name: "largest-first", desc: "in place, largest file first", mode: sim.ModeInPlace, workers: 1, args: "--order size"},
	{name: "named-gzip", desc: "in place, the encryptor copied as `gzip` into a temporary folder of its own", mode: sim.ModeInPlace, workers: 1, args: "--as gzip"},
}

func variantNames() []string {
	var out []string
	for _, v := range adaptiveVariants {
		out = append(out, v.name)
	}
	return out
}

func splitList(s string) []string {
	if s == "" || s == "none" {
		return nil
	}
	return strings.Split(s, ",")
}

// result is one simulator run.
type result struct {
	lost     int
	stopped  bool          // the simulator was killed by a signal
	toStop   time.Duration // from the first encryption (manifest written) to its death
	rule     string        // ransomware rule ids alerted, joined
	finished bool          // the simulator ran to the end
	// held: a kernel tripwire stopped it and no response followed within
	// stoppedTimeout (the benchmark killed it then).
	held bool
	// permEvents: the sensor asked for a permission event on every open;
	// kernelStops counts the kernel stops it judged honest and resumed.
	permEvents  bool
	kernelStops int
	foreign     int // host placement: alerts on processes not the benchmark's
}

type config struct {
	mode    string
	rate    float64
	workers int
	decoys  bool
	variant string // an adaptive variant's name ("" for the modes' tables)
	args    string
}

func (c config) speed() string {
	if c.rate == 0 {
		return "full speed"
	}
	return fmt.Sprintf("%.0f files/s", c.rate)
}

func (b *bench) run(out string, benignOnly bool) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (fanotify permission events and kill): sudo make bench-ransomware")
	}
	if b.placement == placementNamespace && os.Getenv(nsEnv) != "1" {
		return reexecInNamespace()
	}
	if b.placement == placementHost {
		if err := hostPreflight(); err != nil {
			return err
		}
		// Whatever happens, leave no process of ours stopped and say
		// which other ones are (never touching them).
		defer b.checkStopped()
		b.onInterrupt()
	}
	for _, x := range []string{"tillwatch", "tillwatch-sensor"} {
		if _, err := os.Stat(filepath.Join(b.bin, x)); err != nil {
			return fmt.Errorf("%s: run make build first", filepath.Join(b.bin, x))
		}
	}
	abs, err := filepath.Abs(b.bin)
	if err != nil {
		return err
	}
	b.bin = abs
	if b.tmp, err = os.MkdirTemp("", "ransombench-"); err != nil {
		return err
	}
	if !b.keep {
		defer os.RemoveAll(b.tmp)
	}
	if err := b.makeHelper(); err != nil {
		return err
	}
	b.corpus = filepath.Join(b.tmp, "corpus")
	if err := makeCorpus(b.corpus, b.wantFiles); err != nil {
		return fmt.Errorf("corpus: %w", err)
	}
	if b.manifest, err = hashTree(b.corpus); err != nil {
		return err
	}
	b.nfiles = len(b.manifest)
	_ = filepath.WalkDir(b.corpus, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			b.ndirs++
		} else if err == nil {
			if fi, err := d.Info(); err == nil {
				b.bytes += fi.Size()
			}
		}
		return nil
	})
	fmt.Printf("corpus: %d files, %d folders, %.1f MiB in %s\n", b.nfiles, b.ndirs, float64(b.bytes)/(1<<20), b.corpus)

	var configs []config
	if !benignOnly {
		for _, decoys := range []bool{true, false} {
			if !slices.Contains(b.decoys, map[bool]string{true: "on", false: "off"}[decoys]) {
				continue
			}
			for _, m := range b.modes {
				for _, r := range []float64{0, b.rate} {
					for _, w := range []int{1, 4} {
						configs = append(configs, config{mode: m, rate: r, workers: w, decoys: decoys})
					}
				}
			}
			for _, v := range b.adaptive {
				for _, r := range []float64{0, b.rate} {
					configs = append(configs, config{mode: v.mode, rate: r, workers: v.workers, decoys: decoys, variant: v.name, args: v.args})
				}
			}
		}
	}
	results := map[config][]result{}
	for _, c := range configs {
		for i := range b.runs {
			r, err := b.attack(c)
			if err != nil {
				return fmt.Errorf("%s %s %d workers decoys=%v run %d: %w", c.mode, c.speed(), c.workers, c.decoys, i+1, err)
			}
			name := c.mode
			if c.variant != "" {
				name = c.variant
			}
			fmt.Printf("%-14s %-12s workers %d decoys %-5v: lost %3d stopped %-5v after %-8s alerts %s%s\n",
				name, c.speed(), c.workers, c.decoys, r.lost, r.stopped, r.toStop.Round(time.Millisecond), r.rule, b.kernelNote(r))
			results[c] = append(results[c], r)
		}
	}
	var benign []benignResult
	if !b.noBenign {
		if benign, err = b.benignAll(); err != nil {
			return err
		}
	}
	section := b.report(configs, results, benign)
	return benchdoc.Publish(out, b.heading(), section)
}

// heading is the section this run writes: each placement and
// open-permission setting has its own, so the tables stand side by side.
func (b *bench) heading() string {
	if b.placement == placementHost {
		return "## Ransomware: files lost, kernel guard armed (open_permission: " + b.openPerm + ")"
	}
	return "## Ransomware: files lost"
}

// nsEnv marks the copy of this program running in its own PID namespace.
const nsEnv = "RANSOMBENCH_IN_PIDNS"

// reexecInNamespace runs this program again as the only process of a new
// PID namespace with its own /proc (bash as its init, reaping orphans). An
// enforce-mode sensor acts on every process it sees (the exec, RMM and
// Sigma detectors cannot be switched off): confined this way it sees, and
// can kill, only the benchmark's own processes, not other work on a shared
// machine.
func reexecInNamespace() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return errors.New("unshare (util-linux) is needed to confine the sensor to a PID namespace")
	}
	args := append([]string{"--pid", "--fork", "--mount-proc", "--kill-child", "bash", "-c", `"$0" "$@"; exit $?`, self}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), nsEnv+"=1")
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		os.Exit(ee.ExitCode()) // the inner run printed its error
	}
	return err
}

// makeHelper copies this program so the benign helper runs as an
// executable of its own (the guard aggregates a tree on the highest
// ancestor running the same executable: a re-execution of ourselves would
// put this benchmark in the helper's tree).
func (b *bench) makeHelper() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	b.helper = filepath.Join(b.tmp, "tillshop-db")
	return os.WriteFile(b.helper, data, 0o755)
}

// sensor is one running tillwatch-sensor.
type sensor struct {
	cmd      *exec.Cmd
	state    string
	alerts   string
	logPath  string
	done     chan error
	watchDir string
	// pinDir is the kernel layer's pin dir of a host-placed sensor
	// (removed at its stop); permEvents whether its file guard asks for a
	// permission event on every open (the start-up log's line).
	pinDir     string
	permEvents bool
	stopOnce   sync.Once
}

func (b *bench) startSensor(watch string, decoys bool) (*sensor, error) {
	dir, err := os.MkdirTemp(b.tmp, "sensor-")
	if err != nil {
		return nil, err
	}
	// The full sensor (YARA, exec, RMM and Sigma detectors too), in
	// enforce mode; only the decoys are switched by the configuration
	// (and, on the host, the kernel layer: host.go).
	s := &sensor{state: filepath.Join(dir, "state"), alerts: filepath.Join(dir, "alerts.ndjson"), logPath: filepath.Join(dir, "sensor.log"), done: make(chan error, 1), watchDir: watch}
	cfg := fmt.Sprintf("files:\n  canaries: %v\n", decoys)
	args := []string{"run", "-c", filepath.Join(dir, "sensor.yaml"),
		"--no-collector", "--mode", "enforce", "--watch", watch, "--alerts-out", s.alerts,
		"--state-dir", s.state, "--spool", filepath.Join(dir, "spool"), "--metrics-listen", ""}
	// A pin dir of its own, removed at its stop, in both placements: a
	// sensor on the default pins would share them with any other sensor
	// of the machine (a test package running beside this one), and the
	// last to stop would leave them behind.
	b.sensors++
	s.pinDir = fmt.Sprintf("%s%d-%d", pinPrefix, os.Getpid(), b.sensors)
	if b.placement == placementHost {
		cfg = b.hostConfig(decoys, s.pinDir)
	} else {
		cfg += "kernel:\n  pin_dir: " + s.pinDir + "\n"
		// In the PID namespace the process connector would report host pids.
		args = append(args, "--process-backend", "poll")
	}
	if err := os.WriteFile(filepath.Join(dir, "sensor.yaml"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(filepath.Join(b.bin, "tillwatch-sensor"), args...)
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.done <- s.cmd.Wait() }()
	b.mu.Lock()
	b.current = s
	b.mu.Unlock()
	// Ready when both fanotify groups carry a mark on every folder.
	ndirs := 0
	_ = filepath.WalkDir(watch, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			ndirs++
		}
		return nil
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("sensor exited at start (%v): %s", err, s.logText())
		default:
		}
		if benchproc.FanotifyReady("/proc", s.cmd.Process.Pid, ndirs) {
			if b.placement == placementHost {
				// The file guard's and the tripwires' lines are logged
				// before the marks are placed.
				if err := s.checkHost(decoys, b.openPerm); err != nil {
					s.stop()
					return nil, err
				}
			}
			time.Sleep(b.settle)
			return s, nil
		}
		if strings.Contains(s.logText(), "backend fallback") {
			s.stop()
			return nil, fmt.Errorf("the sensor fell back to fsnotify; this benchmark needs fanotify: %s", s.logText())
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("sensor not ready after 30s (marks %v, want %d per group): %s", benchproc.FanotifyMarks("/proc", s.cmd.Process.Pid), ndirs, s.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *sensor) logText() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// stop ends the sensor with SIGTERM (a clean stop: a host-placed sensor
// turns its decoy and burst tripwires off and resumes what they stopped)
// and removes its pins.
func (s *sensor) stop() { s.stopOnce.Do(s.doStop) }

func (s *sensor) doStop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	if s.pinDir != "" {
		s.releasePins()
	}
}

// removeDecoys deletes the decoys the sensor planted, so the next sensor
// (a fresh state directory) plants its own rather than leaving files it
// takes for the user's.
func (s *sensor) removeDecoys() error {
	b, err := os.ReadFile(filepath.Join(s.state, "canaries", "index.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var ds []struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(b, &ds); err != nil {
		return err
	}
	for _, d := range ds {
		if err := os.Remove(d.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// alert is what this benchmark reads from a ransomware alert.
type alert struct {
	rule, ruleset, exe string
	pid                int
}

// readAlerts reads every alert the sensor wrote.
func (s *sensor) readAlerts() []alert {
	f, err := os.Open(s.alerts)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []alert
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if field(m, "event.kind") != "alert" {
			continue
		}
		pid, _ := strconv.Atoi(field(m, "process.pid"))
		out = append(out, alert{rule: field(m, "rule.id"), ruleset: field(m, "rule.ruleset"), exe: field(m, "process.executable"), pid: pid})
	}
	return out
}

// field reads a dotted ECS field, nested or flat.
func field(m map[string]any, name string) string {
	if v, ok := m[name]; ok {
		return fmt.Sprint(v)
	}
	var cur any = m
	for _, k := range strings.Split(name, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		if cur, ok = mm[k]; !ok {
			return ""
		}
	}
	if f, ok := cur.(float64); ok {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return fmt.Sprint(cur)
}

func (b *bench) attack(c config) (result, error) {
	var r result
	s, err := b.startSensor(b.corpus, c.decoys)
	if err != nil {
		return r, err
	}
	args := []string{"simulate", "ransomware", "--dir", b.corpus, "--mode", c.mode, "--workers", strconv.Itoa(c.workers)}
	if c.rate > 0 {
		args = append(args, "--rate", strconv.FormatFloat(c.rate, 'f', -1, 64))
	}
	args = append(args, strings.Fields(c.args)...)
	simCmd := exec.Command(filepath.Join(b.bin, "tillwatch"), args...)
	var simOut bytes.Buffer
	simCmd.Stdout, simCmd.Stderr = &simOut, &simOut
	simCmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := simCmd.Start(); err != nil {
		s.stop()
		return r, err
	}
	waited := make(chan error, 1)
	go func() { waited <- simCmd.Wait() }()
	// Encryption starts once the simulator has written its manifest (its
	// marking pass, a copy of every file, comes first).
	marker := filepath.Join(b.corpus, sim.ManifestName)
	var t0 time.Time
	var werr error
	timeout := time.After(2 * time.Minute)
	held := newHoldWatch(simCmd.Process.Pid, b.placement == placementHost)
	var heldAt time.Time // a kernel stop nobody resumed or killed
wait:
	for {
		select {
		case werr = <-waited:
			break wait
		case <-timeout:
			_ = syscall.Kill(-simCmd.Process.Pid, syscall.SIGKILL)
			werr = <-waited
			simOut.WriteString("\n(ransombench: simulator hung, killed after 2m)")
			break wait
		case <-time.After(time.Millisecond):
			if t0.IsZero() {
				if _, err := os.Stat(marker); err == nil {
					t0 = time.Now()
				}
			}
			if at, long := held.check(); long {
				// Held in the kernel and neither killed nor resumed:
				// the encryption is stopped; end it here.
				heldAt = at
				_ = syscall.Kill(-simCmd.Process.Pid, syscall.SIGKILL)
				werr = <-waited
				simOut.WriteString("\n(ransombench: simulator held stopped, killed)")
				break wait
			}
		}
	}
	end := time.Now()
	if !heldAt.IsZero() {
		end = heldAt
	}
	if t0.IsZero() {
		t0 = end
	}
	if st, ok := simCmd.ProcessState.Sys().(syscall.WaitStatus); ok && st.Signaled() {
		r.stopped = true
		r.toStop = end.Sub(t0)
	} else if werr == nil {
		r.finished = true
	} else if strings.Contains(simOut.String(), "workers did not finish") {
		r.stopped = true // the workers were killed, not the parent
		r.toStop = end.Sub(t0)
	} else if !strings.Contains(simOut.String(), "signal: killed") {
		s.stop()
		return r, fmt.Errorf("simulator failed: %v: %s", werr, simOut.String())
	}
	if !heldAt.IsZero() {
		r.stopped, r.held = true, true
		r.toStop = heldAt.Sub(t0)
	}
	// Let the guard finish its response (kill and decoy restore) before
	// stopping the sensor; reap any worker left behind.
	time.Sleep(300 * time.Millisecond)
	_ = syscall.Kill(-simCmd.Process.Pid, syscall.SIGKILL)
	s.stop()
	r.permEvents = s.pinDir == "" || s.permEvents
	r.kernelStops = strings.Count(s.logText(), logJudgedHonest)
	var rules []string
	for _, a := range s.readAlerts() {
		if b.placement == placementHost && a.ruleset != "ransomware" {
			// The host-placed sensor sees the whole machine's processes;
			// its response is confined to this benchmark.
			r.foreign++
			continue
		}
		if !slices.Contains(rules, a.rule) {
			rules = append(rules, a.rule)
		}
	}
	sort.Strings(rules)
	r.rule = strings.Join(rules, "+")
	if r.rule == "" {
		r.rule = "none"
	}
	now, err := hashTree(b.corpus)
	if err != nil {
		return r, err
	}
	for p, h := range b.manifest {
		if now[p] != h {
			r.lost++
		}
	}
	// Restore: the simulator's own undo, then the decoys out, then the
	// manifest must hold exactly.
	if o, err := exec.Command(filepath.Join(b.bin, "tillwatch"), "simulate", "ransomware", "--dir", b.corpus, "--undo").CombinedOutput(); err != nil {
		return r, fmt.Errorf("undo: %v: %s", err, o)
	}
	if err := s.removeDecoys(); err != nil {
		return r, err
	}
	if err := b.verify(); err != nil {
		return r, fmt.Errorf("after undo: %w", err)
	}
	return r, nil
}

// verify checks the corpus is exactly the manifest: same files, same content.
func (b *bench) verify() error {
	now, err := hashTree(b.corpus)
	if err != nil {
		return err
	}
	var bad []string
	for p, h := range b.manifest {
		if now[p] != h {
			bad = append(bad, p)
		}
	}
	for p := range now {
		if _, ok := b.manifest[p]; !ok {
			bad = append(bad, p+" (extra)")
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("corpus differs from the manifest in %d files: %s", len(bad), strings.Join(bad[:min(len(bad), 5)], ", "))
	}
	return nil
}

// hashTree hashes every regular file under dir, relative paths.
func hashTree(dir string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	return out, err
}

// median of ints.
func median(xs []int) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return float64(s[len(s)/2])
	}
	return float64(s[len(s)/2-1]+s[len(s)/2]) / 2
}

func medianDur(xs []time.Duration) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func (b *bench) report(configs []config, results map[config][]result, benign []benignResult) string {
	var w strings.Builder
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	if b.placement == placementHost {
		b.hostHeader(&w, strings.TrimSpace(string(kernel)))
	} else {
		b.namespaceHeader(&w, strings.TrimSpace(string(kernel)))
	}
	b.tables(&w, configs, results, benign)
	return w.String()
}

func (b *bench) namespaceHeader(w *strings.Builder, kernel string) {
	fmt.Fprintf(w, `## Ransomware: files lost

Measured by `+"`make bench-ransomware`"+` (bench/ransombench, `+"`go run ./bench/ransombench -out docs/benchmarks.md`"+`, as root) on
%s: %d CPU cores (shared with other work while measured), Linux %s, %s. The sensor runs
`+"`tillwatch-sensor run --no-collector --mode enforce --watch CORPUS --process-backend poll`"+` (every detector on, fanotify),
in a PID namespace of its own with the simulator and the workloads (so the enforce-mode sensor's other
detectors cannot act on the rest of the shared machine; the process connector would report host pids there); the
corpus is %d real files (PDF, DOCX, PNG, JPEG, CSV, text, SQLite, C/Go/Python sources; %.1f MiB) in %d folders.
Each configuration ran %d times; **lost** = files changed or gone against a SHA-256 manifest taken before the sensor
first started (decoys are not in it), median over the runs with every run in brackets; **stopped** = runs in which
the simulator was killed; **time to stop** = median from the simulator's first encryption (its manifest written,
after its marking pass) to its death. After every run the corpus is restored with `+"`--undo`"+` and checked against
the manifest. "decoys off" is `+"`files: {canaries: false}`"+`: the simulator walks in name order and reaches the
`+"`0000 …`"+` decoy before any real file, so "decoys on" mostly measures the decoy path and "decoys off" the behaviour
scoring alone. In this placement the kernel layer's decoy and burst tripwires are not armed (the kernel names host
pids), so the file guard always asks for a permission event per open; the sections "Ransomware: files lost, kernel
guard armed (open_permission: …)" below measure the sensor on the host with them (`+"`-placement host`"+`,
`+"`make bench-ransomware-kernel`"+`).
`, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), kernel, runtime.Version(),
		b.nfiles, float64(b.bytes)/(1<<20), b.ndirs, b.runs)
}

func (b *bench) tables(w *strings.Builder, configs []config, results map[config][]result, benign []benignResult) {
	var modes []string
	for _, c := range configs {
		if c.variant == "" && !slices.Contains(modes, c.mode) {
			modes = append(modes, c.mode)
		}
	}
	for _, m := range modes {
		fmt.Fprintf(w, "\n### %s\n\n| decoys | speed | workers | lost (median) | lost per run | stopped | time to stop | alerts |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n", m)
		for _, c := range configs {
			if c.mode != m || c.variant != "" {
				continue
			}
			rs := results[c]
			var lost []int
			var stops []time.Duration
			stopped := 0
			var rules []string
			for _, r := range rs {
				lost = append(lost, r.lost)
				if r.stopped {
					stopped++
					stops = append(stops, r.toStop)
				}
				if !slices.Contains(rules, r.rule) {
					rules = append(rules, r.rule)
				}
			}
			ts := "not stopped"
			if len(stops) > 0 {
				ts = medianDur(stops).Round(time.Millisecond).String()
			}
			on := "on"
			if !c.decoys {
				on = "off"
			}
			fmt.Fprintf(w, "| %s | %s | %d | %g | %v | %d/%d | %s | %s |\n", on, c.speed(), c.workers, median(lost),
				lost, stopped, len(rs), ts, strings.Join(rules, ", "))
		}
	}

	b.adaptiveReport(w, configs, results)

	// Goals, per decoy setting.
	if len(configs) > 0 {
		fmt.Fprintf(w, "\n### Against the goals\n\nGoals: at ~%.0f files/s a median of at most 1 file lost over the modes and at most 5 in the worst run; at full\nspeed at most 10 in every mode (every run). Workers 1 and 4 both count.\n\n", b.rate)
		fmt.Fprintf(w, "| decoys | speed | median lost over all runs | worst run | goal | met |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, decoys := range []bool{true, false} {
			for _, r := range []float64{b.rate, 0} {
				var lost []int
				for _, c := range configs {
					if c.decoys == decoys && c.rate == r && c.variant == "" {
						for _, x := range results[c] {
							lost = append(lost, x.lost)
						}
					}
				}
				if len(lost) == 0 {
					continue
				}
				worst := slices.Max(lost)
				goal, met := "median <= 1, worst <= 5", median(lost) <= 1 && worst <= 5
				if r == 0 {
					goal, met = "<= 10 in every run", worst <= 10
				}
				on := "on"
				if !decoys {
					on = "off"
				}
				verdict := "yes"
				if !met {
					verdict = "**no: missed**"
				}
				sp := config{rate: r}.speed()
				fmt.Fprintf(w, "| %s | %s | %g | %d | %s | %s |\n", on, sp, median(lost), worst, goal, verdict)
			}
		}
	}

	fmt.Fprintf(w, "\n### Benign workloads (same sensor, enforce mode, decoys on)\n\nEach ran %d times in a watched folder holding a copy of the corpus. A false positive is a run in which the\nsensor stopped or killed the program (or one of its children) or raised a ransomware alert; the alerts column lists\nevery alert of the run.\n\n| workload | command | runs | false positives | alerts |\n| --- | --- | --- | --- | --- |\n", b.runs)
	fps := 0
	for _, r := range benign {
		fps += r.fps
		al := "none"
		if len(r.alerts) > 0 {
			al = strings.Join(r.alerts, "; ")
		}
		if r.skipped != "" {
			fmt.Fprintf(w, "| %s | `%s` | 0 | not run: %s | |\n", r.name, cell(r.command), r.skipped)
			continue
		}
		fmt.Fprintf(w, "| %s | `%s` | %d | %d | %s |\n", r.name, cell(r.command), r.runs, r.fps, al)
	}
	verdict := "met: no benign program was stopped or killed"
	if fps > 0 {
		verdict = fmt.Sprintf("**missed: %d benign runs stopped, killed or alerted on**", fps)
	}
	fmt.Fprintf(w, "\nGoal \"no benign process stopped or killed\": %s.\n", verdict)
}

// adaptiveReport writes the adaptive behaviours' table and their goals
// (every behaviour at both speeds: a median of at most 1 file lost, at most
// 5 in the worst run).
func (b *bench) adaptiveReport(w *strings.Builder, configs []config, results map[config][]result) {
	if len(b.adaptive) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Adaptive behaviours\n\nEncryptors that adapt: one-file workers, the machine's own tools, other orders, a benign name (`tillwatch simulate ransomware --mode M [--order O] [--as NAME]`).\n\n")
	fmt.Fprintf(w, "| behaviour | what it does | decoys | speed | workers | lost (median) | lost per run | stopped | time to stop | alerts |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	var all []int
	var missed []string
	worst := 0
	for _, v := range b.adaptive {
		for _, c := range configs {
			if c.variant != v.name {
				continue
			}
			rs := results[c]
			var lost []int
			var stops []time.Duration
			var rules []string
			stopped := 0
			for _, r := range rs {
				lost = append(lost, r.lost)
				if r.stopped {
					stopped++
					stops = append(stops, r.toStop)
				}
				if !slices.Contains(rules, r.rule) {
					rules = append(rules, r.rule)
				}
			}
			if len(lost) == 0 {
				continue
			}
			all = append(all, lost...)
			worst = max(worst, slices.Max(lost))
			if median(lost) > 1 || slices.Max(lost) > 5 {
				missed = append(missed, fmt.Sprintf("%s (decoys %v, %s)", v.name, c.decoys, c.speed()))
			}
			ts := "not stopped"
			if len(stops) > 0 {
				ts = medianDur(stops).Round(time.Millisecond).String()
			}
			on := "on"
			if !c.decoys {
				on = "off"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %d | %g | %v | %d/%d | %s | %s |\n", v.name, v.desc, on, c.speed(), c.workers,
				median(lost), lost, stopped, len(rs), ts, strings.Join(rules, ", "))
		}
	}
	if len(all) == 0 {
		return
	}
	verdict := "met by every row"
	if len(missed) > 0 {
		verdict = "**missed by " + strings.Join(missed, "; ") + "**"
	}
	fmt.Fprintf(w, "\nGoal for every adaptive behaviour, at full speed and at ~%.0f files/s, decoys on and off: median <= 1, worst <= 5 per row. Over all runs: median %g, worst %d; %s.\n",
		b.rate, median(all), worst, verdict)
}

// cell escapes a table cell's pipes (a shell pipeline would split the row).
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
