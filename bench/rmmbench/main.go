//go:build linux

// Command rmmbench measures how long the real sensor takes from the exec of
// a decoder below an RMM agent to its TW-RMM-0101 alert line in
// --alerts-out, and writes p50/p99 to the "## RMM detection latency"
// section of docs/benchmarks.md. It needs root (process connector, kill).
// Run with `make bench-rmm` from the repository root.
//
// Each run starts a stand-in Kaseya agent (a copy of /bin/sh named
// agentmon) that runs `(sleep HOLD; cat agent.crt) | ./cert -d > out.sh`,
// ./cert being a renamed copy of base64, as the simulator's decode step
// does. Runs are one at a time.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchdoc"
)

func main() {
	defer benchproc.KeepNoKernelPins()()
	out := flag.String("out", "docs/benchmarks.md", "markdown file whose RMM latency section is replaced")
	runs := flag.Int("runs", 100, "measured runs")
	warmup := flag.Int("warmup", 3, "runs before the measured ones (not counted)")
	hold := flag.Duration("hold", 200*time.Millisecond, "how long the decoder waits for its input")
	keep := flag.String("keep", "", "copy the sensor's log and alerts into this directory (for a miss)")
	flag.Parse()
	if err := run(*out, *runs, *warmup, *hold, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "rmmbench: "+err.Error())
		os.Exit(1)
	}
}

// sample is one run: from the kernel's exec time of the decoder (the
// alert's @timestamp) and from the runner's clock just before it started
// the agent (an upper bound), to the moment the alert line was read.
type sample struct {
	fromExec, fromStart time.Duration
}

func run(outPath string, runs, warmup int, hold time.Duration, keep string) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: the sensor's process connector and kill")
	}
	if _, err := os.Stat("rules/rmm/catalog.yaml"); err != nil {
		return errors.New("run from the repository root (no rules/rmm/catalog.yaml)")
	}
	work, err := os.MkdirTemp("", "rmmbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	build := exec.Command("go", "build", "-o", work+"/", "./cmd/tillwatch-sensor")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build the sensor: %w", err)
	}
	cfg := filepath.Join(work, "sensor.yaml")
	if err := os.WriteFile(cfg, []byte("rmm:\n  approved: [kaseya-vsa]\n"), 0o600); err != nil {
		return err
	}
	alerts := filepath.Join(work, "alerts.ndjson")
	if err := os.WriteFile(alerts, nil, 0o600); err != nil {
		return err
	}

	// The stand-ins: the agent, the renamed decoder, the certificate.
	agentDir := filepath.Join(work, "opt", "kaseya")
	kw := filepath.Join(work, "kworking")
	for _, d := range []string{agentDir, kw} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	agent := filepath.Join(agentDir, "agentmon")
	b64, err := exec.LookPath("base64")
	if err != nil {
		return err
	}
	if err := copyFile("/bin/sh", agent); err != nil {
		return err
	}
	if err := copyFile(b64, filepath.Join(kw, "cert")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(kw, "agent.crt"), []byte("IyEvYmluL3NoCmVjaG8gaGFybWxlc3MK\n"), 0o644); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	var log syncBuf
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sensor := exec.CommandContext(ctx, filepath.Join(work, "tillwatch-sensor"), "run", "--config", cfg, "--no-collector",
		"--mode", "enforce", "--state-dir", filepath.Join(work, "state"), "--spool", filepath.Join(work, "spool"),
		"--alerts-out", alerts, "--process-backend", "netlink", "--metrics-listen", metricsAddr, "--log-level", "debug")
	sensor.Stdout, sensor.Stderr = &log, &log
	sensor.Cancel = func() error { return sensor.Process.Signal(syscall.SIGTERM) }
	sensor.WaitDelay = 10 * time.Second
	if err := sensor.Start(); err != nil {
		return err
	}
	defer func() { cancel(); _ = sensor.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(log.String(), "process source running") {
		if time.Now().After(deadline) {
			return fmt.Errorf("the sensor did not start its process source:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	tail, err := newTail(alerts)
	if err != nil {
		return err
	}
	defer tail.Close()
	h := strconv.FormatFloat(hold.Seconds(), 'f', -1, 64)
	var samples []sample
	missed := 0
	var missedPIDs []int
	for i := range warmup + runs {
		script := "(sleep " + h + "; cat agent.crt) | ./cert -d > out-" + strconv.Itoa(i) + ".sh; :"
		cmd := exec.Command(agent, "-c", script)
		cmd.Dir = kw
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return err
		}
		s, ok := tail.waitAlert(cmd.Process.Pid, t0, 5*time.Second)
		_ = cmd.Wait()
		if i < warmup {
			continue
		}
		if !ok {
			missed++
			missedPIDs = append(missedPIDs, cmd.Process.Pid)
			continue
		}
		samples = append(samples, s)
	}
	if len(samples) == 0 {
		return fmt.Errorf("no alert in %d runs; sensor log:\n%s", runs, log.String())
	}
	if keep != "" {
		all, _ := os.ReadFile(alerts)
		if err := errors.Join(os.WriteFile(filepath.Join(keep, "alerts.ndjson"), all, 0o600),
			os.WriteFile(filepath.Join(keep, "sensor.log"), []byte(log.String()), 0o600)); err != nil {
			return err
		}
	}
	lossNote := sensorLosses(metricsAddr, log.String())
	fmt.Fprintln(os.Stderr, "rmmbench: "+lossNote)
	if missed > 0 {
		// Say what the sensor made of the runs without an alert.
		all, _ := os.ReadFile(alerts)
		for _, pid := range missedPIDs {
			fmt.Fprintf(os.Stderr, "rmmbench: no TW-RMM-0101 within 5s below agent pid %d; its alerts:\n", pid)
			for _, l := range strings.Split(string(all), "\n") {
				if strings.Contains(l, `"agent_pid":`+strconv.Itoa(pid)+`,`) || strings.Contains(l, "pid "+strconv.Itoa(pid)+")") {
					fmt.Fprintln(os.Stderr, "  "+l)
				}
			}
		}
	}
	section := report(samples, runs, warmup, missed, hold, lossNote)
	return benchdoc.Publish(outPath, heading, section)
}

func report(ss []sample, runs, warmup, missed int, hold time.Duration, lossNote string) string {
	pct := func(get func(sample) time.Duration, p float64) time.Duration {
		v := make([]time.Duration, len(ss))
		for i, s := range ss {
			v[i] = get(s)
		}
		slices.Sort(v)
		// Nearest rank.
		k := int(p*float64(len(v))+0.999999) - 1
		return v[min(max(k, 0), len(v)-1)]
	}
	byExec := func(s sample) time.Duration { return s.fromExec }
	byStart := func(s sample) time.Duration { return s.fromStart }
	ms := func(d time.Duration) string {
		return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
	}
	p99 := pct(byExec, 0.99)
	missNote := ""
	if missed > 0 {
		missNote = " A miss is a decoder whose /proc entry the sensor read after it had exited (its exec processed more than " +
			strconv.FormatFloat(hold.Seconds(), 'f', -1, 64) + "s late, under CPU contention): with no executable and command line the detector has nothing to judge (see sensor/detect/rmm). Misses are not in the percentiles."
	}
	verdict := "met"
	if p99 >= 100*time.Millisecond || missed > 0 {
		verdict = "**not met**"
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf(`## RMM detection latency

Measured by `+"`make bench-rmm`"+` (bench/rmmbench) on %s: the real tillwatch-sensor binary (`+"`--no-collector --mode enforce --process-backend netlink`"+`,
`+"`rmm.approved: [kaseya-vsa]`"+`) on this machine: %d CPU cores shared with other work, %s/%s, Linux %s. A stand-in
Kaseya agent (a copy of /bin/sh named agentmon) runs `+"`(sleep %s; cat agent.crt) | ./cert -d > out.sh`"+`, ./cert being
a renamed copy of base64; %d measured runs after %d warm-up runs, one at a time.

Latency is the time the TW-RMM-0101 line was read from `+"`--alerts-out`"+` (polled every millisecond) minus the
decoder's exec time as the kernel reported it (the alert's `+"`@timestamp`"+`, the process connector's exec
timestamp). It covers the /proc reads, the detector, enrichment (sha256, ancestry), the kill and the NDJSON write.
The second row starts the clock in the runner just before it starts the agent (an upper bound: it adds the agent's
own exec and fork).

| from | to | p50 | p99 | max |
| --- | --- | --- | --- | --- |
| decoder exec (`+"`@timestamp`"+`) | alert line in --alerts-out | %s | %s | %s |
| runner, before starting the agent | alert line in --alerts-out | %s | %s | %s |

Runs without an alert within 5s: %d of %d (%s).%s Goal p99 < 100 ms (decoder exec to alert line): %s.
`, time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, kernel,
		strconv.FormatFloat(hold.Seconds(), 'f', -1, 64), runs, warmup,
		ms(pct(byExec, 0.5)), ms(p99), ms(pct(byExec, 1)),
		ms(pct(byStart, 0.5)), ms(pct(byStart, 0.99)), ms(pct(byStart, 1)),
		missed, runs, lossNote, missNote, verdict)
}

// sensorLosses says what the sensor lost during the run: its dropped-event
// counters and how often its process source resynchronised after lost
// kernel events.
func sensorLosses(addr, log string) string {
	var dropped []string
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "tillwatch_events_dropped_total") && !strings.HasSuffix(l, " 0") {
				dropped = append(dropped, l)
			}
		}
	}
	d := "no events dropped by the sensor"
	if len(dropped) > 0 {
		d = "sensor dropped events: " + strings.Join(dropped, ", ")
	}
	lost, gone := 0, 0
	for _, l := range strings.Split(log, "\n") {
		switch {
		case strings.Contains(l, "process gone before it could be read"):
			gone++
		case strings.Contains(l, "resync") || strings.Contains(l, "lost"):
			lost++
		}
	}
	return fmt.Sprintf("%s; %d log lines about lost process events; %d execs on the host were read after the process had exited", d, lost, gone)
}

// tail follows the alerts file.
type tail struct {
	f   *os.File
	buf []byte
}

func newTail(p string) (*tail, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, err
	}
	return &tail{f: f}, nil
}

func (t *tail) Close() error { return t.f.Close() }

// waitAlert reads new lines until the decode alert below agentPID arrives.
func (t *tail) waitAlert(agentPID int, t0 time.Time, within time.Duration) (sample, bool) {
	deadline := t0.Add(within)
	chunk := make([]byte, 64<<10)
	for time.Now().Before(deadline) {
		n, _ := t.f.Read(chunk)
		if n == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		seen := time.Now()
		t.buf = append(t.buf, chunk[:n]...)
		for {
			i := bytes.IndexByte(t.buf, '\n')
			if i < 0 {
				break
			}
			line := t.buf[:i]
			t.buf = t.buf[i+1:]
			if at, ok := decodeAlert(line, agentPID); ok {
				return sample{fromExec: seen.Sub(at), fromStart: seen.Sub(t0)}, true
			}
		}
	}
	return sample{}, false
}

func decodeAlert(line []byte, agentPID int) (time.Time, bool) {
	var a struct {
		TS   time.Time `json:"@timestamp"`
		Rule struct {
			ID string `json:"id"`
		} `json:"rule"`
		TW struct {
			RMM struct {
				AgentPID int `json:"agent_pid"`
			} `json:"rmm"`
		} `json:"tillwatch"`
	}
	if json.Unmarshal(line, &a) != nil || a.Rule.ID != "TW-RMM-0101" || a.TW.RMM.AgentPID != agentPID {
		return time.Time{}, false
	}
	return a.TS, true
}

// syncBuf is the sensor's log.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func copyFile(from, to string) error {
	real, err := filepath.EvalSymlinks(from)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(real)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

const heading = "## RMM detection latency"
