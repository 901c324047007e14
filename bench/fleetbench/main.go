//go:build linux

// Command fleetbench measures the collector under a large fleet at rest:
// 20,000 simulated sensors (sim/fleet, one process: real enrolment,
// one TLS connection each, heartbeats every 30 s) against the real
// tillwatch-collector binary on SQLite. It reports the enrolment time,
// the collector's RSS and CPU over a window (from /proc) and the
// heartbeats that failed, and writes the "## Collector fleet load" section
// of docs/benchmarks.md. Run with `make bench-fleet`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchdoc"
	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
)

const heading = "## Collector fleet load"

func main() {
	out := flag.String("out", "docs/benchmarks.md", "markdown file whose fleet section is replaced (\"\" prints only)")
	sensors := flag.Int("sensors", 20000, "simulated sensors")
	window := flag.Duration("window", 2*time.Minute, "how long the connected fleet is measured")
	heartbeat := flag.Duration("heartbeat", 30*time.Second, "heartbeat interval of every sensor")
	collectorBin := flag.String("collector", "", "a tillwatch-collector binary (default: go build ./cmd/tillwatch-collector into a temp dir)")
	profile := flag.String("profile", "", "diagnose instead: run bench/profcollector (the collector with pprof), write collector.pprof into DIR, leave the docs alone")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := Options{Collector: *collectorBin, Sensors: *sensors, Window: *window, Heartbeat: *heartbeat, Interval: time.Second}
	if *profile != "" {
		var err error
		if o.Collector, err = benchproc.ProfCollector(*profile); err != nil {
			fmt.Fprintln(os.Stderr, "fleetbench: "+err.Error())
			os.Exit(1)
		}
		o.ProfileDir, _ = filepath.Abs(*profile)
		*out = ""
	}
	if err := run(ctx, *out, o); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench: "+err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, out string, o Options) error {
	if o.Collector == "" {
		path, cleanup, err := benchproc.BuildCollector()
		if err != nil {
			return err
		}
		defer cleanup()
		o.Collector = path
	}
	load0 := benchproc.LoadAvg("/proc")
	r, err := Measure(ctx, o)
	if err != nil {
		return err
	}
	section := report(r, o, load0, benchproc.LoadAvg("/proc"))
	return benchdoc.Publish(out, heading, section)
}

func report(r Result, o Options, load0, load1 string) string {
	var w strings.Builder
	cmd := "go run ./bench/fleetbench"
	if o.Sensors != 20000 {
		cmd += " -sensors " + strconv.Itoa(o.Sensors)
	}
	if o.Window != 2*time.Minute {
		cmd += " -window " + o.Window.String()
	}
	if o.Heartbeat != 30*time.Second {
		cmd += " -heartbeat " + o.Heartbeat.String()
	}
	expected := float64(r.Sensors) * r.Collector.Window.Seconds() / o.Heartbeat.Seconds()
	fmt.Fprintf(&w, `%s

Measured by `+"`make bench-fleet`"+` (bench/fleetbench, `+"`%s`"+`) on %s: %s;
shared with other work while measured (load average %s before, %s after). The collector is the real
tillwatch-collector binary (`+"`go build ./cmd/tillwatch-collector`"+`, SQLite, `+"`heartbeat_interval: %s`"+`, log level warn) on
127.0.0.1. The sensors are simulated by sim/fleet in the benchmark's process on the same machine: each enrols
with a sensor token (64 enrolments at a time), then holds its own TLS connection (its own HTTP client, as a till)
and heartbeats every %s ±10%%, the first one spread over one interval; they raise no alerts and do not poll for
commands. After enrolment the benchmark waits %s (every sensor has connected and heartbeated once), then reads
the collector's VmRSS and utime+stime from /proc every %s for **%s**.

File descriptors: the collector and the simulator each hold one per sensor connection (and need about %d more).
RLIMIT_NOFILE was %s soft, %s hard when the benchmark started; when that is below the sensors plus %d it raises
the limit of its own process with setrlimit (the hard limit too when privileged: CAP_SYS_RESOURCE) before it starts
the collector, which inherits it: **%s** in force.%s

| measure | value |
| --- | --- |
| sensors | %s of %s asked for; %s enrolled, %d enrolment errors |
| enrolment (all %s, 64 at a time) | %s (%.0f per second; collector CPU %.1f s) |
| collector RSS, median / max over the window | %s / %s |
| collector CPU, average over the window | %.1f%% of one core (%.1f s) |
| collector threads, max | %d |
| collector open descriptors at the end | %s |
| heartbeats answered in the window | %s (%.0f per second; %.0f expected from the interval) |
| heartbeats failed in the window | %d (%d while the fleet connected, before the window) |
| heartbeat latency (probe: one more sensor, one heartbeat every %s), p50 / p99 / max | %s / %s / %s (%d probes, %d failed) |
| simulator (this process) RSS at the end, CPU in the window | %s, %.1f s (%.1f%% of one core) |
`, heading, cmd, time.Now().UTC().Format("2006-01-02"), benchproc.Machine(), load0, load1, o.Heartbeat, o.Heartbeat,
		r.Settle, o.Interval, r.Collector.Window.Round(time.Second),
		fdMargin, benchproc.Commas(int64(r.NoFileBefore[0])), benchproc.Commas(int64(r.NoFileBefore[1])), fdMargin, benchproc.Commas(int64(r.NoFile)), fitNote(r),
		benchproc.Commas(int64(r.Sensors)), benchproc.Commas(int64(r.Wanted)), benchproc.Commas(r.Enrolled), r.EnrolErrors,
		benchproc.Commas(int64(r.Sensors)), r.EnrolIn.Round(100*time.Millisecond), float64(r.Enrolled)/r.EnrolIn.Seconds(), r.EnrolCPU,
		benchproc.MiB(r.Collector.MedianRSS), benchproc.MiB(r.Collector.MaxRSS),
		r.Collector.CPUPercent, r.Collector.CPUSeconds, r.Collector.MaxThreads, benchproc.Commas(int64(r.CollectorFDs)),
		benchproc.Commas(r.Heartbeats), float64(r.Heartbeats)/r.Collector.Window.Seconds(), expected,
		r.HeartbeatErrors, r.ErrorsBefore,
		r.ProbeEvery, pct(r.Probe, 50), pct(r.Probe, 99), pct(r.Probe, 100), len(r.Probe), r.ProbeErrors,
		benchproc.MiB(r.Simulator.RSS), r.SimulatorCPU, 100*r.SimulatorCPU/r.Collector.Window.Seconds())
	return w.String()
}

// pct is the p-th percentile (nearest rank), rounded to a millisecond.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(max((p*len(s)+99)/100, 1), len(s))
	return s[i-1].Round(time.Millisecond)
}

func fitNote(r Result) string {
	if r.FitNote == "" {
		return fmt.Sprintf(" All %s sensors fit.", benchproc.Commas(int64(r.Sensors)))
	}
	return " **Not all sensors fit**: " + r.FitNote + "."
}
