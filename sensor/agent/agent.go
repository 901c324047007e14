// Package agent wires the sensor from its configuration: sources,
// detectors, enrichment, response and sinks into a pipeline, plus the
// collector uplink, heartbeats and the metrics endpoint. cmd/tillwatch-sensor
// is a thin main around it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/internal/buildinfo"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/filehash"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/internal/rulebundle"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/action"
	"github.com/tillwatch/tillwatch/sensor/canary"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/detect/execpath"
	yaradetect "github.com/tillwatch/tillwatch/sensor/detect/yara"
	"github.com/tillwatch/tillwatch/sensor/enrich"
	"github.com/tillwatch/tillwatch/sensor/fileguard"
	"github.com/tillwatch/tillwatch/sensor/fleetcmd"
	"github.com/tillwatch/tillwatch/sensor/identity"
	"github.com/tillwatch/tillwatch/sensor/kernel"
	"github.com/tillwatch/tillwatch/sensor/memtrim"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	"github.com/tillwatch/tillwatch/sensor/privilege"
	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	"github.com/tillwatch/tillwatch/sensor/response"
	"github.com/tillwatch/tillwatch/sensor/rulesync"
	"github.com/tillwatch/tillwatch/sensor/shipper"
	"github.com/tillwatch/tillwatch/sensor/spool"
	"github.com/tillwatch/tillwatch/sensor/tamper"
	"github.com/tillwatch/tillwatch/sensor/uplink"
)

// MachineIDPath is where the host identity is read from when not overridden.
const MachineIDPath = "/etc/machine-id"

// Sensor is a wired, not yet running sensor.
type Sensor struct {
	cfg     config.Config
	log     *slog.Logger
	reg     *prometheus.Registry
	pipe    *pipeline.Pipeline
	uplink  *uplink.Uplink
	shipper *shipper.Shipper
	spool   *spool.Spool
	memScan *yaradetect.Detector // nil when YARA is off
	// kernelWatch judges what the kernel tripwires stopped; nil without
	// the kernel layer. YARA is handed to it once wired.
	kernelWatch *kernel.Watch
	tamper      *tamper.Watch    // the unclean-stop marker
	actions     *action.Executor // kill-switch actions on this host
	// hashes is the digest cache per file version that enrichment, YARA
	// and the kill-switch share: an executable is read once per version.
	hashes   *filehash.Cache
	receiver *fleetcmd.Receiver // nil without a collector
	hostID   string
	hostName string
	// What the heartbeat reports (versions.go), fixed at start.
	configVersion string
	rulesVersion  string
	bundles       *rulesync.Syncer
	// The kernel layer (nil when not loaded) and what its judgements of
	// stopped processes need: the decoys and the file guard's scorer.
	kern     *kernel.Layer
	kernCfg  kernel.Config
	canaries *canary.Set
	guard    *fileguard.Guard
	// restart stops Run to start again into a new rule bundle.
	restartOnce sync.Once
	restart     chan struct{}
}

// New checks privileges, loads rules, prepares the state dir and wires the
// pipeline. Configuration and privilege problems come back as
// cfgfile.UsageError (exit 2); it does not contact the collector.
func New(cfg config.Config, log *slog.Logger) (*Sensor, error) {
	if err := prepareHost(cfg); err != nil {
		return nil, err
	}
	hostID, hostName, err := identify(cfg)
	if err != nil {
		return nil, err
	}
	rs, err := loadRuleSet(&cfg, log)
	if err != nil {
		return nil, err
	}
	s := newSensor(cfg, log, hostID, hostName, rs)
	if err := s.wireUplink(cfg); err != nil {
		return nil, err
	}
	s.wirePipeline(cfg, rs.degraded)
	table, src := s.wireProcess(cfg)
	s.wireTamper(cfg)
	s.pipe.AddDetector(execpath.New(rs.exec, nil))
	// Sigma: rules/sigma plus each rule folder's sigma/ (sensor/detect/sigma).
	s.wireSigma(cfg, log)
	// RMM-agent watch: catalog, lineage, integrity (sensor/agent/rmm.go).
	catalog, err := s.wireRMM(cfg, table)
	if err != nil {
		return nil, err
	}
	// eBPF: process feed, agent taint, tripwires (sensor/agent/kernel_linux.go).
	if err := s.wireKernel(cfg, src, table, catalog); err != nil {
		return nil, err
	}
	// File activity under --watch, the synchronous ransomware guard and
	// decoys, and the ransomware detector (sensor/agent/files.go).
	if err := s.wireFiles(cfg, catalog); err != nil {
		return nil, err
	}
	// YARA: a detector and a source in one (sensor/agent/yara.go).
	yaraEngine, err := s.wireYARA(cfg)
	if err != nil {
		return nil, err
	}
	if s.kernelWatch != nil && yaraEngine != nil {
		s.kernelWatch.SetScanFile(func(p string) ([]string, error) {
			res, err := yaraEngine.ScanFile(p)
			var names []string
			for _, m := range res.Matches {
				names = append(names, m.Rule)
			}
			return names, err
		})
	}
	// The kill-switch: local actions and the command receiver
	// (sensor/agent/killswitch.go).
	if err := s.wireKillSwitch(cfg, catalog, yaraEngine); err != nil {
		return nil, err
	}
	s.wireResponse(cfg, table)

	// Where alerts go: --alerts-out and the spool -> shipper journal.
	if err := s.wireOutputs(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// prepareHost validates cfg, checks this process's privileges for it and
// creates the state dir.
func prepareHost(cfg config.Config) error {
	if err := cfg.Validate(); err != nil {
		return cfgfile.Usage(err)
	}
	if err := checkPrivileges(cfg); err != nil {
		return cfgfile.Usage(err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return cfgfile.Usagef("state_dir: %v", err)
	}
	return nil
}

// identify returns the host's id (kept in the state dir) and name.
func identify(cfg config.Config) (hostID, hostName string, err error) {
	hostID, err = identity.HostID(cfg.StateDir, cfg.HostID, MachineIDPath)
	if err != nil {
		return "", "", cfgfile.Usagef("state_dir: %v", err)
	}
	hostName = cfg.HostName
	if hostName == "" {
		hostName, _ = os.Hostname()
	}
	return hostID, hostName, nil
}

// ruleSet is what loadRuleSet gathers before anything is wired.
type ruleSet struct {
	configVersion, rulesVersion string
	bundles                     *rulesync.Syncer
	degraded                    string // why the rule bundles are degraded, or ""
	exec                        []execpath.Rule
}

// loadRuleSet opens the signed rule bundles (which add their folder to
// cfg.Rules), loads the exec-location rules and computes the versions the
// heartbeat reports.
func loadRuleSet(cfg *config.Config, log *slog.Logger) (ruleSet, error) {
	var rs ruleSet
	var err error
	// The operator's configuration, before a bundle adds its folder.
	rs.configVersion, err = configVersion(*cfg)
	if err != nil {
		return rs, cfgfile.Usage(err)
	}
	// A signed rule bundle from the collector adds its folder to the rule
	// folders before any rule is loaded (sensor/agent/rulebundles.go).
	rs.bundles, rs.degraded, err = openRuleBundles(cfg, log)
	if err != nil {
		return rs, err
	}
	rs.exec, err = loadExecRules(cfg.Rules)
	if err != nil {
		return rs, cfgfile.Usage(err)
	}
	rs.rulesVersion, err = rulesVersion(cfg.Rules)
	if err != nil {
		return rs, cfgfile.Usage(err)
	}
	return rs, nil
}

// newSensor returns the sensor with its registry and the rule bundles'
// hooks, nothing wired yet.
func newSensor(cfg config.Config, log *slog.Logger, hostID, hostName string, rs ruleSet) *Sensor {
	s := &Sensor{cfg: cfg, log: log, reg: prometheus.NewRegistry(), hostID: hostID, hostName: hostName,
		configVersion: rs.configVersion, rulesVersion: rs.rulesVersion, bundles: rs.bundles, restart: make(chan struct{}), hashes: filehash.New(0)}
	rs.bundles.SetFetcher(lazyFetcher{s})
	rs.bundles.SetApplied(func(rulebundle.Manifest) { s.requestRestart() })
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s
}

// wireUplink builds the collector client and the enrolment, unless the
// collector is disabled.
func (s *Sensor) wireUplink(cfg config.Config) error {
	if cfg.Collector.Disabled {
		return nil
	}
	c, err := client.New(client.Config{URL: cfg.Collector.URL, CAFile: cfg.Collector.CAFile, Timeout: 30 * time.Second, UserAgent: "tillwatch-sensor/" + buildinfo.Version})
	if err != nil {
		return cfgfile.Usagef("collector: %v", err)
	}
	s.uplink, err = uplink.New(uplink.Options{
		Client: c, URL: cfg.Collector.URL, StateDir: cfg.StateDir, TokenFile: cfg.Collector.EnrollTokenFile,
		Request: api.EnrollRequest{HostID: s.hostID, HostName: s.hostName, OS: runtime.GOOS, AgentVersion: buildinfo.Version, Labels: cfg.Labels},
		Log:     s.log,
	})
	if err != nil {
		return cfgfile.Usagef("state_dir: %v", err)
	}
	return nil
}

// wirePipeline builds the pipeline that stamps every event with this host
// and agent, and reports degraded rule bundles on it.
func (s *Sensor) wirePipeline(cfg config.Config, rulesDegraded string) {
	agentID := s.hostID
	if s.uplink != nil && s.uplink.Identity().AgentID != "" {
		agentID = s.uplink.Identity().AgentID
	}
	s.pipe = pipeline.New(pipeline.Options{
		Stamp: pipeline.Stamp{
			Host:   event.Host{ID: s.hostID, Name: s.hostName, Hostname: s.hostName, Architecture: runtime.GOARCH, OS: &event.OS{Type: runtime.GOOS}},
			Agent:  event.Agent{ID: agentID, Type: event.AgentType, Version: buildinfo.Version, Name: "tillwatch-sensor"},
			Mode:   cfg.Mode,
			Labels: cfg.Labels,
		},
		Log: s.log, Registerer: s.reg, ForwardTelemetry: cfg.ForwardTelemetry,
	})
	s.bundles.SetEmit(s.pipe.Emit)
	if rulesDegraded != "" {
		s.pipe.Health().Report("rules", event.HealthDegraded, rulesDegraded)
	}
}

// wireProcess adds the process source and returns it with the process
// table it fills.
func (s *Sensor) wireProcess(cfg config.Config) (*proctree.Table, *process.Source) {
	table := proctree.New(proctree.Options{})
	src := process.New(process.Config{Backend: cfg.Process.Backend, PollInterval: cfg.Process.PollInterval, ProcRoot: cfg.Process.ProcRoot}, table, s.log)
	src.OnHealth(s.pipe.Health().Report)
	s.pipe.AddSource(src)
	s.reg.MustRegister(processMetrics(src)...)
	return table, src
}

// wireTamper turns a previous run that ended uncleanly into an alert
// (sensor/tamper): a source and a detector.
func (s *Sensor) wireTamper(cfg config.Config) {
	s.tamper = tamper.New(tamper.Options{StateDir: cfg.StateDir, Version: buildinfo.Version})
	s.pipe.AddSource(s.tamper)
	s.pipe.AddDetector(s.tamper)
}

// wireResponse adds the enricher and the responder of the alert loop
// (a memory scan after a response when YARA's memory scanning is on).
func (s *Sensor) wireResponse(cfg config.Config, table *proctree.Table) {
	s.pipe.AddEnricher(enrich.New(table, cfg.Process.ProcRoot, s.hashes))
	r := response.New(cfg.Mode, nil, s.log)
	if cfg.Response.OnlyUnder > 0 {
		r.OnlyUnder(cfg.Response.OnlyUnder)
		s.log.Warn("response confined to one process tree (response.only_under): processes elsewhere are detected, never acted on", "pid", cfg.Response.OnlyUnder)
	}
	var responder pipeline.Responder = r
	if s.memScan != nil {
		responder = scanMemoryAfterResponse{next: responder, yd: s.memScan}
	}
	s.pipe.SetResponder(responder)
}

// loadExecRules loads the built-in exec-location rules and those in extra
// rule folders (their exec/ subfolder).
func loadExecRules(extra []string) ([]execpath.Rule, error) {
	all, err := execpath.LoadRules(rules.Builtin, "exec")
	if err != nil {
		return nil, fmt.Errorf("built-in rules: %w", err)
	}
	for _, dir := range extra {
		more, err := execpath.LoadRules(os.DirFS(dir), "exec")
		if err != nil {
			return nil, fmt.Errorf("rules %s: %w", dir, err)
		}
		all = append(all, more...)
	}
	return all, nil
}

// checkPrivileges refuses to start without what the configuration needs.
func checkPrivileges(cfg config.Config) error {
	caps, err := privilege.Effective(cfg.Process.ProcRoot)
	if errors.Is(err, errors.ErrUnsupported) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	if cfg.Mode == "enforce" {
		if err := caps.Missing([]int{privilege.CapKill}, "enforce mode stops processes; or use --mode monitor"); err != nil {
			return err
		}
	}
	if cfg.Process.Backend == "netlink" {
		if err := caps.Missing([]int{privilege.CapNetAdmin}, "process.backend netlink; or use auto"); err != nil {
			return err
		}
	}
	return nil
}

// trimAfter is how long after the start the sensor gives back the memory
// only its start-up needed (memtrim): by then the rules are compiled, the
// process table is built from /proc and the watched trees are marked. A
// page needed again later is simply read back in.
const trimAfter = 10 * time.Second

// trimAfterStart gives back the start-up memory trimAfter after the start.
// Measured on the idle sensor, it is about 5 MiB of the binary's code that
// start-up alone touched (docs/benchmarks.md, "Sensor footprint (idle)").
func (s *Sensor) trimAfterStart(ctx context.Context) {
	t := time.NewTimer(trimAfter)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	st, err := memtrim.Trim()
	if errors.Is(err, errors.ErrUnsupported) {
		return
	}
	if err != nil {
		s.log.Warn("giving back start-up memory failed in part; the sensor runs on with it", logkey.Error, err)
	}
	s.log.Info("start-up memory given back", logkey.RSSBefore, st.RSSBefore, logkey.RSSAfter, st.RSSAfter)
}

// Run runs the sensor until ctx is cancelled. Before the pipeline starts it
// enrols once: a refused token is a usage error (exit 2); an unreachable
// collector is logged in one line and enrolment is retried in the
// background while the sensor protects the host on its own.
func (s *Sensor) Run(ctx context.Context) error {
	// A new rule bundle stops the run like SIGTERM does, then Run returns
	// ErrRestart.
	ctx, stopForBundle := context.WithCancel(ctx)
	defer stopForBundle()
	var restarting atomic.Bool
	go func() {
		select {
		case <-s.restart:
			restarting.Store(true)
			stopForBundle()
		case <-ctx.Done():
		}
	}()
	s.log.Info("sensor starting", logkey.HostID, s.hostID, "host_name", s.hostName, "mode", s.cfg.Mode,
		"collector", s.collectorDesc(), "version", buildinfo.Version,
		"config_version", s.configVersion, "rules_version", s.rulesVersion)
	if s.uplink != nil {
		ectx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := s.uplink.Enroll(ectx, false)
		cancel()
		switch {
		case err == nil:
		case uplink.Permanent(err):
			return cfgfile.Usage(err)
		default:
			s.log.Warn("collector unreachable; running locally, alerts are queued and enrolment is retried", logkey.Error, err)
		}
	}
	var bg sync.WaitGroup
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	if s.cfg.Metrics.Listen != "" {
		if err := s.serveMetrics(bgCtx, &bg); err != nil {
			return err
		}
	}
	// From here on the sensor protects the host: mark the run as begun.
	if err := s.tamper.Begin(); err != nil {
		return cfgfile.Usagef("state_dir: %v", err)
	}
	if s.uplink != nil && len(s.cfg.RuleBundles.Keys) > 0 {
		bg.Add(1)
		go func() { defer bg.Done(); s.bundles.Run(ctx) }()
	}
	if s.receiver != nil {
		// On ctx, not bgCtx: a long-poll in flight must not hold up the
		// shipper's bounded last send at shutdown.
		bg.Add(1)
		go func() { defer bg.Done(); s.receiver.Run(ctx) }()
	}
	if s.shipper != nil {
		bg.Add(2)
		go func() { defer bg.Done(); _ = s.shipper.Run(bgCtx) }()
		go func() {
			defer bg.Done()
			shipper.RunHeartbeat(ctx, bundleHeartbeats{s.uplink, s.bundles}, s.heartbeat, s.cfg.Collector.HeartbeatInterval, s.log)
		}()
	}
	bg.Add(1)
	// On ctx: a stop must not wait for the trim's timer (the shipper's
	// last send below waits for bg, and a sensor stopped within 10 s of
	// its start was held until the trim fired).
	go func() { defer bg.Done(); s.trimAfterStart(ctx) }()
	err := s.pipe.Run(ctx) // returns after draining and closing the sinks
	if s.shipper != nil {
		// The pipeline closed the shipper: it makes its bounded last send.
		waitShipper := make(chan struct{})
		go func() { bg.Wait(); close(waitShipper) }()
		select {
		case <-waitShipper:
		case <-time.After(10 * time.Second):
		}
	}
	stopBG()
	bg.Wait()
	if s.actions != nil {
		if cerr := s.actions.Close(); cerr != nil {
			s.log.Error("closing the kill-switch actions", logkey.Error, cerr)
		}
	}
	if s.spool != nil {
		if cerr := s.spool.Close(); cerr != nil {
			s.log.Error("closing the spool", logkey.Error, cerr)
		}
	}
	// A clean stop leaves no process waiting for a judgement nobody will
	// make: the stopping tripwires stand down until the next start.
	// A restart into a new rule bundle is the sensor's own doing, never
	// a stop someone asked systemd for.
	suspect := s.standDownKernel(restarting.Load())
	// Only a run that got here stopped cleanly, and not at the asking of
	// a process under an agent, removes the marker; any other end leaves
	// it for the next start to report.
	if !suspect {
		if terr := s.tamper.End(); terr != nil {
			s.log.Error("removing the unclean-stop marker; the next start will report an unclean stop", logkey.Error, terr)
		}
	}
	s.log.Info("sensor stopped")
	if restarting.Load() && err == nil {
		return ErrRestart
	}
	return err
}

func (s *Sensor) collectorDesc() string {
	if s.cfg.Collector.Disabled {
		return "none (standalone)"
	}
	return s.cfg.Collector.URL
}

func (s *Sensor) heartbeat() api.Heartbeat {
	return api.Heartbeat{
		HostID: s.hostID, HostName: s.hostName, AgentVersion: buildinfo.Version, Mode: s.cfg.Mode,
		Health: s.pipe.Health().States(), SentAt: time.Now().UTC(),
		ConfigVersion: s.configVersion, RulesVersion: s.rulesVersion,
	}
}

func (s *Sensor) serveMetrics(ctx context.Context, wg *sync.WaitGroup) error {
	ln, err := net.Listen("tcp", s.cfg.Metrics.Listen)
	if err != nil {
		return cfgfile.Usagef("metrics.listen: %v (set another address, or \"\" to disable)", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		go func() { <-ctx.Done(); _ = srv.Close() }()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics endpoint stopped", logkey.Error, err)
		}
	}()
	s.log.Info("metrics endpoint listening", logkey.Addr, ln.Addr().String())
	return nil
}

// processMetrics exports the process source's counters (events,
// overflows, enrich failures, in that order), so a lost process event is a
// number on /metrics and not only a log line.
func processMetrics(src *process.Source) []prometheus.Collector {
	counter := func(name, help string, f func(process.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(src.Stats())) })
	}
	return []prometheus.Collector{
		counter("tillwatch_process_events_total", "Process start and end events the process source emitted.",
			func(st process.Stats) uint64 { return st.Events }),
		counter("tillwatch_process_overflows_total", "Times the kernel dropped process events (process connector receive buffer full); each is repaired by a /proc rescan.",
			func(st process.Stats) uint64 { return st.Overflows }),
		counter("tillwatch_process_enrich_failures_total", "Processes gone before their /proc entry was read: seen without executable or command line.",
			func(st process.Stats) uint64 { return st.EnrichFailures }),
	}
}
