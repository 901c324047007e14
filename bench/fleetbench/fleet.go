//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tillwatch/tillwatch/bench/internal/benchproc"
	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/sensor/identity"
	"github.com/tillwatch/tillwatch/sim/fleet"
)

// Options configure a fleet measurement.
type Options struct {
	Collector string        // the tillwatch-collector binary
	Sensors   int           // simulated sensors wanted
	Window    time.Duration // how long the connected fleet is measured
	Heartbeat time.Duration // heartbeat interval of every sensor
	// Settle is the wait after enrolment before the window, so every
	// sensor has sent its first heartbeat (they are spread over one
	// interval) and holds its connection; default one interval plus 5s.
	Settle   time.Duration
	Interval time.Duration // between samples of the collector
	ProcRoot string
	// ProfileDir, if set, makes Collector a profcollector writing
	// collector.pprof there.
	ProfileDir string
}

// Result is a fleet measurement.
type Result struct {
	Wanted, Sensors int       // sensors asked for, and run (fewer if the descriptors did not fit)
	NoFile          uint64    // RLIMIT_NOFILE (soft) of this process and the collector
	NoFileBefore    [2]uint64 // soft and hard limit when the benchmark started
	FitNote         string    // why Sensors < Wanted
	Enrolled        int64
	EnrolErrors     int64
	EnrolIn         time.Duration // fleet.Start: every enrolment, 64 at a time
	Collector       benchproc.Summary
	EnrolCPU        float64       // collector CPU seconds during enrolment
	Heartbeats      int64         // answered during the window
	HeartbeatErrors int64         // failed during the window
	ErrorsBefore    int64         // failed before the window (while connecting)
	CollectorFDs    int           // open descriptors of the collector at the end of the window
	Settle          time.Duration // wait between enrolment and the window
	// Probe is the latency of heartbeats sent by one more enrolled sensor,
	// one after the other every ProbeEvery, during the window.
	Probe        []time.Duration
	ProbeErrors  int
	ProbeEvery   time.Duration
	Simulator    benchproc.Sample
	SimulatorCPU float64 // CPU seconds of this process (the simulated fleet) during the window
}

// fdMargin is what a process needs besides one descriptor per sensor
// connection: the listener, the database and its journal, epoll, logs,
// connections being opened or closed.
const fdMargin = 256

// Measure raises the descriptor limit, starts the collector on SQLite,
// enrols the simulated fleet and measures the collector over the window.
func Measure(ctx context.Context, o Options) (Result, error) {
	r := Result{Wanted: o.Sensors, Sensors: o.Sensors}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.Settle == 0 {
		o.Settle = o.Heartbeat + 5*time.Second
	}
	r.Settle = o.Settle
	// Children inherit the limit: set it before the collector starts.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return r, err
	}
	r.NoFileBefore = [2]uint64{lim.Cur, lim.Max}
	var why error
	if r.NoFile, why = benchproc.RaiseNoFile(uint64(o.Sensors + fdMargin)); r.NoFile == 0 {
		return r, fmt.Errorf("RLIMIT_NOFILE: %w", why)
	}
	if r.NoFile < uint64(o.Sensors+fdMargin) {
		r.Sensors = int(r.NoFile) - fdMargin
		r.FitNote = fmt.Sprintf("%v. The collector and the simulator each need one descriptor per sensor connection plus a few dozen (listener, database, epoll, logs); keeping %d spare for connections being opened and closed, %s sensors is the largest fleet that fits",
			why, fdMargin, benchproc.Commas(int64(r.Sensors)))
		if r.Sensors < 1 {
			return r, errors.New(r.FitNote)
		}
	}
	tmp, err := os.MkdirTemp("", "fleetbench-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	addr, err := benchproc.FreeAddr()
	if err != nil {
		return r, err
	}
	cfg := filepath.Join(tmp, "collector.yaml")
	// The interval the collector tells its sensors (the simulated ones keep
	// their own); it accepts 5s to 1h.
	told := min(max(o.Heartbeat, 5*time.Second), time.Hour)
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("log: {level: warn}\nheartbeat_interval: %s\n", told)), 0o644); err != nil {
		return r, err
	}
	data := filepath.Join(tmp, "data")
	args := []string{"run", "-c", cfg, "--data", data, "--listen", addr}
	if o.ProfileDir != "" {
		args = append([]string{"-cpuprofile", filepath.Join(o.ProfileDir, "collector.pprof")}, args...)
	}
	p, err := benchproc.Start(o.Collector, args, filepath.Join(tmp, "collector.log"))
	if err != nil {
		return r, err
	}
	defer p.Stop(30 * time.Second)
	ca := filepath.Join(data, "ca.pem")
	if err := p.WaitUntil(60*time.Second, "its listener", func() bool {
		if _, err := os.Stat(ca); err != nil {
			return false
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}); err != nil {
		return r, err
	}
	out, err := exec.Command(o.Collector, "token", "create", "--role", "sensor", "--uses", "0", "-c", cfg, "--data", data).Output()
	if err != nil {
		return r, fmt.Errorf("token create: %w", err)
	}
	enrolToken := strings.TrimSpace(string(out))
	// The probe: one more sensor, enrolled first, whose heartbeats are timed.
	probe, err := client.New(client.Config{URL: "https://" + addr, CAFile: ca, Token: enrolToken, Timeout: time.Minute, UserAgent: "fleetbench-probe"})
	if err != nil {
		return r, err
	}
	pr, err := probe.Enroll(ctx, api.EnrollRequest{HostID: "fb-probe", HostName: "fb-probe", AgentVersion: "fleetbench", OS: "linux", HostKey: identity.NewHostKey()})
	if err != nil {
		return r, fmt.Errorf("enrol the probe: %w", err)
	}
	probe = probe.WithToken(pr.Credential)

	fctx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	c0, err := benchproc.Read(o.ProcRoot, p.Pid())
	if err != nil {
		return r, err
	}
	start := time.Now()
	fl, err := fleet.Start(fctx, fleet.Options{
		URL: "https://" + addr, CAFile: ca, EnrollToken: enrolToken, Sensors: r.Sensors, HostPrefix: "fb",
		HeartbeatInterval: o.Heartbeat, EnrollConcurrency: 64,
	})
	if err != nil {
		return r, err
	}
	defer fl.Wait()
	defer stopFleet()
	r.EnrolIn = time.Since(start)
	if c1, err := benchproc.Read(o.ProcRoot, p.Pid()); err == nil {
		r.EnrolCPU = float64(c1.CPUTicks-c0.CPUTicks) / benchproc.ClockTicks
	}
	st := fl.Stats()
	r.Enrolled, r.EnrolErrors = st.Enrolled, st.EnrollErrors
	fmt.Fprintf(os.Stderr, "fleetbench: %d of %d sensors enrolled in %s; settling %s\n", r.Enrolled, r.Sensors, r.EnrolIn.Round(time.Millisecond), o.Settle)
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(o.Settle):
	}
	before := fl.Stats()
	r.ErrorsBefore = before.HeartbeatErrors
	self0, _ := benchproc.Read(o.ProcRoot, os.Getpid())
	wctx, cancel := context.WithTimeout(ctx, o.Window)
	defer cancel()
	r.ProbeEvery = 500 * time.Millisecond
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		for wctx.Err() == nil {
			t0 := time.Now()
			_, err := probe.Heartbeat(wctx, api.Heartbeat{HostID: "fb-probe", AgentVersion: "fleetbench", Mode: "monitor", SentAt: t0.UTC()})
			switch {
			case wctx.Err() != nil:
			case err != nil:
				r.ProbeErrors++
			default:
				r.Probe = append(r.Probe, time.Since(t0))
			}
			select {
			case <-wctx.Done():
			case <-time.After(r.ProbeEvery):
			}
		}
	}()
	ss := benchproc.Watch(wctx, o.ProcRoot, p.Pid(), o.Interval)
	<-probed
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	after := fl.Stats()
	r.Simulator, _ = benchproc.Read(o.ProcRoot, os.Getpid())
	r.SimulatorCPU = float64(r.Simulator.CPUTicks-self0.CPUTicks) / benchproc.ClockTicks
	r.CollectorFDs = benchproc.OpenFDs(o.ProcRoot, p.Pid())
	r.Collector = benchproc.Summarize(ss)
	r.Heartbeats = after.Heartbeats - before.Heartbeats
	r.HeartbeatErrors = after.HeartbeatErrors - before.HeartbeatErrors
	if p.Exited() {
		return r, fmt.Errorf("the collector exited during the window; its log:\n%s", p.Log())
	}
	if r.Collector.Samples < 2 {
		return r, fmt.Errorf("only %d samples of the collector", r.Collector.Samples)
	}
	return r, nil
}
