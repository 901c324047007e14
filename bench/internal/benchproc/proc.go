//go:build linux

package benchproc

import (
	"errors"
	"fmt"
	"github.com/tillwatch/tillwatch/sensor/kernel"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a program a benchmark runs (a sensor, a collector), its output
// in a log file.
type Proc struct {
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
	err     error
}

// Start starts bin with args, stdout and stderr to logPath, in a process
// group of its own (so a terminal's ^C reaches only the benchmark, which
// stops it in order).
func Start(bin string, args []string, logPath string) (*Proc, error) {
	return StartEnv(bin, args, logPath, nil)
}

// StartEnv is Start with env added to this process's environment.
func StartEnv(bin string, args []string, logPath string, env []string) (*Proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child holds its own descriptor
	p := &Proc{Cmd: exec.Command(bin, args...), LogPath: logPath, done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = logf, logf
	if len(env) > 0 {
		p.Cmd.Env = append(os.Environ(), env...)
	}
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	return p, nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Log is everything the process wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitUntil waits until ready holds, failing early if the process exits.
func (p *Proc) WaitUntil(d time.Duration, what string, ready func() bool) error {
	deadline := time.Now().Add(d)
	for !ready() {
		if p.Exited() {
			return fmt.Errorf("%s exited (%v) before %s; its log:\n%s", p.Cmd.Path, p.err, what, tail(p.Log()))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %s after %s; its log:\n%s", p.Cmd.Path, what, d, tail(p.Log()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// WaitLog waits until the log holds substr.
func (p *Proc) WaitLog(substr string, d time.Duration) error {
	return p.WaitUntil(d, fmt.Sprintf("%q in its log", substr), func() bool { return strings.Contains(p.Log(), substr) })
}

// Stop sends SIGTERM, waits up to grace, then kills. It returns the exit
// error of a process that did not stop cleanly.
func (p *Proc) Stop(grace time.Duration) error {
	if p.Exited() {
		return p.err
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s ignored SIGTERM for %s and was killed", p.Cmd.Path, grace)
	}
}

func tail(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// Build builds the Go packages (import paths or ./cmd/... relative to the
// working directory) into dir with go build and extra arguments (tags,
// flags) before the packages.
func Build(dir string, args []string, pkgs ...string) error {
	cmd := exec.Command("go", append(append(append([]string{"build"}, args...), "-o", dir+string(os.PathSeparator)), pkgs...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", strings.Join(pkgs, " "), err)
	}
	return nil
}

// BuildCollector builds tillwatch-collector into a new temporary folder,
// for the benchmarks that run the real collector; cleanup removes it.
func BuildCollector() (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "tillwatch-bench-bin-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	if err := Build(dir, nil, "github.com/tillwatch/tillwatch/cmd/tillwatch-collector"); err != nil {
		cleanup()
		return "", nil, err
	}
	return filepath.Join(dir, "tillwatch-collector"), cleanup, nil
}

// Metrics is one scrape of a Prometheus text endpoint: every series
// ("name{labels}") and its value.
type Metrics map[string]float64

// Scrape reads the Prometheus text at url.
func Scrape(url string) (Metrics, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return ParseMetrics(string(b))
}

// ParseMetrics parses the Prometheus text exposition format (comments and
// timestamps ignored).
func ParseMetrics(text string) (Metrics, error) {
	m := Metrics{}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		// The value follows the series, which ends at its '}' if labelled.
		rest := l
		series := ""
		if i := strings.LastIndexByte(l, '}'); i >= 0 {
			series, rest = l[:i+1], l[i+1:]
		} else {
			f := strings.Fields(l)
			series, rest = f[0], strings.Join(f[1:], " ")
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics line without a value: %q", l)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", l, err)
		}
		m[series] = v
	}
	return m, nil
}

// Sum adds every series of the metric name.
func (m Metrics) Sum(name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// Diff is after minus before for every series of the metrics named (all
// when names is empty) that changed, sorted by series.
func Diff(before, after Metrics, names ...string) []SeriesDelta {
	var out []SeriesDelta
	for k, v := range after {
		if len(names) > 0 && !matches(k, names) {
			continue
		}
		if d := v - before[k]; d != 0 {
			out = append(out, SeriesDelta{Series: k, Delta: d})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Series < out[j].Series })
	return out
}

func matches(series string, names []string) bool {
	for _, n := range names {
		if series == n || strings.HasPrefix(series, n+"{") {
			return true
		}
	}
	return false
}

// SeriesDelta is how much one series grew.
type SeriesDelta struct {
	Series string
	Delta  float64
}

// ErrSkip marks a part of a benchmark that could not run here (and why),
// as opposed to one that failed.
var ErrSkip = errors.New("skipped")

// ProfSensor builds bench/profsensor (the standalone sensor with Go's
// profilers) into dir and returns it with the arguments that make it write
// dir/cpu.pprof over its run and dir/heap.pprof when stopped.
func ProfSensor(dir string) (bin string, args []string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, err
	}
	if err := Build(abs, nil, "github.com/tillwatch/tillwatch/bench/profsensor"); err != nil {
		return "", nil, err
	}
	return filepath.Join(abs, "profsensor"), []string{"-cpuprofile", filepath.Join(abs, "cpu.pprof"), "-memprofile", filepath.Join(abs, "heap.pprof")}, nil
}

// ProfCollector builds bench/profcollector (the collector with Go's CPU
// profiler) into dir and returns it; its command line is the collector's,
// after "-cpuprofile FILE" to profile.
func ProfCollector(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := Build(abs, nil, "github.com/tillwatch/tillwatch/bench/profcollector"); err != nil {
		return "", err
	}
	return filepath.Join(abs, "profcollector"), nil
}

// KeepNoKernelPins returns a function that removes the sensor's kernel-layer
// pins (sensor/kernel.DefaultPinDir) if they were not there when it was
// called: a benchmark's sensors arm the layer, whose pins outlive them by
// design, and a benchmark leaves nothing behind unless a deployed sensor
// had them.
func KeepNoKernelPins() func() {
	if _, err := os.Stat(kernel.DefaultPinDir); !os.IsNotExist(err) {
		return func() {}
	}
	return func() {
		if err := kernel.Release(kernel.DefaultPinDir); err != nil && !errors.Is(err, errors.ErrUnsupported) {
			fmt.Fprintln(os.Stderr, "remove the kernel layer's pins:", err, "(tillwatch-sensor kernel release)")
		}
	}
}
