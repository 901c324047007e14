//go:build linux

// Command fanoutbench measures the kill-switch's reach: the time from the
// alert that completes a campaign to the last acknowledgement of the
// automatic disable-rmm by every sensor, for fleets of simulated sensors
// (sim/fleet: real enrolment, TLS, long-polls, signature checks and
// acknowledgements, from one process) against the real tillwatch-collector
// binary on its embedded store. It writes the "## Kill-switch fan-out"
// section of docs/benchmarks.md. Run with `make bench-fanout`.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
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
	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/sim/fleet"
)

const heading = "## Kill-switch fan-out"

func main() {
	out := flag.String("out", "docs/benchmarks.md", "markdown file whose fan-out section is replaced (\"\" prints only)")
	sizes := flag.String("sensors", "1000,10000", "fleet sizes, comma-separated")
	runs := flag.Int("runs", 5, "campaigns per fleet size")
	collector := flag.String("collector", "", "a tillwatch-collector binary, or a wrapper running bench/profcollector (default: go build ./cmd/tillwatch-collector into a temp dir)")
	flag.Parse()
	if err := run(*out, *sizes, *runs, *collector); err != nil {
		fmt.Fprintln(os.Stderr, "fanoutbench:", err)
		os.Exit(1)
	}
}

type sizeResult struct {
	sensors        int
	enrolIn        time.Duration
	lastAck        []time.Duration // per campaign: trigger alert to the last acknowledgement
	p50Ack, p99Ack time.Duration   // over every acknowledgement of every campaign
	// CPU seconds over the campaigns (trigger to last acknowledgement) of
	// the collector and of this process (the simulated fleet), and the
	// campaigns' total wall time.
	collectorCPU, fleetCPU float64
	campaignTime           time.Duration
}

func run(out, sizes string, runs int, collectorBin string) error {
	if collectorBin == "" {
		path, cleanup, err := benchproc.BuildCollector()
		if err != nil {
			return err
		}
		defer cleanup()
		collectorBin = path
	}
	var results []sizeResult
	load0 := benchproc.LoadAvg("/proc")
	for _, f := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 3 {
			return fmt.Errorf("-sensors: %q is not a fleet size of at least 3", f)
		}
		r, err := measure(collectorBin, n, runs)
		if err != nil {
			return fmt.Errorf("%d sensors: %w", n, err)
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%d sensors: last ack p50 %s p99 %s (every ack p50 %s p99 %s)\n",
			n, pct(r.lastAck, 50), pct(r.lastAck, 99), r.p50Ack, r.p99Ack)
	}
	section := render(results, runs, sizes, load0, benchproc.LoadAvg("/proc"))
	return benchdoc.Publish(out, heading, section)
}

func measure(collectorBin string, n, runs int) (sizeResult, error) {
	res := sizeResult{sensors: n}
	dir, err := os.MkdirTemp("", "fanoutbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	addr, err := benchproc.FreeAddr()
	if err != nil {
		return res, err
	}
	cfg := filepath.Join(dir, "collector.yaml")
	// Only critical alerts count, one campaign per rule id; a generous
	// issue rate so runs back to back are not throttled.
	if err := os.WriteFile(cfg, []byte(`campaign: {hosts: 3, window: 10m, min_severity: 95, action: disable-rmm, rmm_product: bench-agent}
killswitch: {issue_rate: 1000}
log: {level: warn}
`), 0o644); err != nil {
		return res, err
	}
	data := filepath.Join(dir, "data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	coll := exec.CommandContext(ctx, collectorBin, "run", "-c", cfg, "--data", data, "--listen", addr)
	// Stopped as an operator would (SIGTERM), so that a profiling wrapper
	// (-collector) writes its profile; killed if it does not stop.
	coll.Cancel = func() error { return coll.Process.Signal(syscall.SIGTERM) }
	coll.WaitDelay = 20 * time.Second
	var collLog bytes.Buffer
	coll.Stdout, coll.Stderr = &collLog, &collLog
	if err := coll.Start(); err != nil {
		return res, err
	}
	defer func() { cancel(); coll.Wait() }()
	ca := filepath.Join(data, "ca.pem")
	if err := benchproc.WaitFor(30*time.Second, func() bool {
		_, err := os.Stat(ca)
		c, derr := net.DialTimeout("tcp", addr, time.Second)
		if derr == nil {
			c.Close()
		}
		return err == nil && derr == nil
	}); err != nil {
		return res, fmt.Errorf("collector did not start: %s", collLog.String())
	}
	token := func(role string) (string, error) {
		args := []string{"token", "create", "--role", role, "--data", data}
		if role == "sensor" {
			args = append(args, "--uses", "0") // one token enrols the whole simulated fleet
		}
		o, err := exec.Command(collectorBin, args...).Output()
		return strings.TrimSpace(string(o)), err
	}
	enrol, err := token("sensor")
	if err != nil {
		return res, fmt.Errorf("token: %w", err)
	}
	responder, err := token("responder")
	if err != nil {
		return res, fmt.Errorf("token: %w", err)
	}

	var mu sync.Mutex
	acks := map[string][]time.Time{} // command id -> ack times
	start := time.Now()
	fl, err := fleet.Start(ctx, fleet.Options{
		URL: "https://" + addr, CAFile: ca, EnrollToken: enrol, Sensors: n, HostPrefix: "bench",
		HeartbeatInterval: 30 * time.Second, Commands: true, EnrollConcurrency: 64,
		OnAck: func(a fleet.Ack) {
			mu.Lock()
			acks[a.CommandID] = append(acks[a.CommandID], a.At)
			mu.Unlock()
		},
	})
	if err != nil {
		return res, err
	}
	defer fl.Wait()
	defer cancel()
	if fl.Sensors() != n {
		return res, fmt.Errorf("only %d of %d sensors enrolled", fl.Sensors(), n)
	}
	if err := benchproc.WaitFor(5*time.Minute, func() bool { return fl.Stats().Polling >= int64(n) }); err != nil {
		return res, fmt.Errorf("long-polls in flight: %d of %d", fl.Stats().Polling, n)
	}
	res.enrolIn = time.Since(start)
	cl, err := client.New(client.Config{URL: "https://" + addr, CAFile: ca, Token: responder, Timeout: time.Minute})
	if err != nil {
		return res, err
	}
	var every []time.Duration
	for r := range runs {
		rule := fmt.Sprintf("TW-BENCH-%d-%d", n, r)
		var t0 time.Time
		coll0, _ := benchproc.Read("/proc", coll.Process.Pid)
		self0, _ := benchproc.Read("/proc", os.Getpid())
		w0 := time.Now()
		for i := range 3 {
			a := fleet.Alert(fl.Host(i), r)
			a.Rule.ID, a.Event.Severity, a.Event.RiskScore = rule, 99, 99
			if i == 2 {
				t0 = time.Now()
			}
			if err := fl.SendAlert(ctx, i, a); err != nil {
				return res, fmt.Errorf("trigger alert: %w", err)
			}
		}
		var id string
		if err := benchproc.WaitFor(30*time.Second, func() bool {
			cmds, err := cl.Commands(ctx, 20)
			if err != nil {
				return false
			}
			for _, c := range cmds {
				if strings.Contains(c.Reason, "rule:"+rule+" ") {
					id = c.ID
					return true
				}
			}
			return false
		}); err != nil {
			return res, fmt.Errorf("no campaign command for %s", rule)
		}
		if err := benchproc.WaitFor(2*time.Minute, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acks[id]) >= n
		}); err != nil {
			mu.Lock()
			got := len(acks[id])
			mu.Unlock()
			return res, fmt.Errorf("campaign %d: %d of %d acknowledgements", r, got, n)
		}
		coll1, _ := benchproc.Read("/proc", coll.Process.Pid)
		self1, _ := benchproc.Read("/proc", os.Getpid())
		res.campaignTime += time.Since(w0)
		res.collectorCPU += float64(coll1.CPUTicks-coll0.CPUTicks) / benchproc.ClockTicks
		res.fleetCPU += float64(self1.CPUTicks-self0.CPUTicks) / benchproc.ClockTicks
		mu.Lock()
		times := slices.Clone(acks[id])
		mu.Unlock()
		var last time.Duration
		for _, at := range times {
			d := at.Sub(t0)
			every = append(every, d)
			last = max(last, d)
		}
		res.lastAck = append(res.lastAck, last)
		fmt.Fprintf(os.Stderr, "  %d sensors, campaign %d: last acknowledgement after %s\n", n, r+1, last.Round(time.Millisecond))
		time.Sleep(2 * time.Second) // let the fleet settle back into waiting polls
	}
	res.p50Ack, res.p99Ack = pct(every, 50), pct(every, 99)
	return res, nil
}

func render(rs []sizeResult, runs int, sizes, load0, load1 string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `%s
Time from the alert that completes a campaign (the third host's critical alert leaving its sensor) to the
last acknowledgement of the automatic disable-rmm by every sensor of the fleet. The sensors are simulated
(sim/fleet, in one process): each enrols, pins the collector's key, holds a long-poll over its own TLS
connection, verifies the command's signature and acknowledges; they act on nothing. The collector is the
real tillwatch-collector binary on SQLite; both share this machine (%d CPUs, %s). %d campaigns per size.
`, heading, runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, runs)
	fmt.Fprintf(&b, "Measured %s on %s; load average %s before, %s after.\n\n", time.Now().UTC().Format("2006-01-02"), benchproc.Machine(), load0, load1)
	b.WriteString("| sensors | enrol + all polling | last ack p50 | last ack p99 | every ack p50 | every ack p99 | goal (p99) | collector CPU per campaign | fleet simulator CPU per campaign |\n")
	b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rs {
		goal := "-"
		switch {
		case r.sensors <= 1000:
			goal = "< 1 s"
		case r.sensors <= 10000:
			goal = "< 5 s"
		}
		perCampaign := func(cpu float64) string {
			n := max(len(r.lastAck), 1)
			share := 100 * cpu / (max(r.campaignTime.Seconds(), 1e-9) * float64(runtime.NumCPU()))
			return fmt.Sprintf("%.2f s (%.0f%% of the machine)", cpu/float64(n), share)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.sensors, r.enrolIn.Round(time.Second),
			pct(r.lastAck, 50), pct(r.lastAck, 99), r.p50Ack, r.p99Ack, goal, perCampaign(r.collectorCPU), perCampaign(r.fleetCPU))
	}
	fmt.Fprintf(&b, "\nCPU is counted from the first trigger alert to the last acknowledgement of each campaign, from /proc: the\n"+
		"collector's process and the benchmark's own (the simulated sensors' TLS, signature checks and requests); the\n"+
		"share is of the machine's %d CPUs over those windows.\n", runtime.NumCPU())
	fmt.Fprintf(&b, "\nCommand: `make bench-fanout` (`go run ./bench/fanoutbench -sensors %s -runs %d`). Velociraptor,\n"+
		"the fastest peer that publishes a figure, notifies about 30 clients per second.\n", sizes, runs)
	return b.String()
}

// pct is the p-th percentile (nearest rank), rounded to a millisecond.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s) + 99) / 100
	i = min(max(i, 1), len(s))
	return s[i-1].Round(time.Millisecond)
}
