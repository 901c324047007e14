// Package config is the sensor's configuration: a typed struct with
// defaults, strict YAML loading (a typo is an error, not a default) and a
// Validate that reports every problem at once, each naming its key.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

// Config is /etc/tillwatch/sensor.yaml.
type Config struct {
	// Mode is monitor (report only) or enforce (also stop processes on
	// high-confidence local detections).
	Mode string `yaml:"mode"`
	// HostID overrides the host identity (default: /etc/machine-id, else a
	// random id kept in the state dir).
	HostID   string            `yaml:"host_id"`
	HostName string            `yaml:"host_name"`
	Labels   map[string]string `yaml:"labels"`
	StateDir string            `yaml:"state_dir"`
	SpoolDir string            `yaml:"spool_dir"`
	// Watch lists directories watched for file activity.
	Watch []string `yaml:"watch"`
	// Rules lists extra rule folders loaded on top of the built-in set.
	Rules []string `yaml:"rules"`
	// AlertsOut also appends every alert as NDJSON to this file ("-" = stdout).
	AlertsOut string `yaml:"alerts_out"`

	Collector Collector `yaml:"collector"`
	Process   Process   `yaml:"process"`
	// Kernel configures the eBPF layer (sensor/kernel, docs/kernel.md).
	Kernel  Kernel  `yaml:"kernel"`
	Log     Log     `yaml:"log"`
	Metrics Metrics `yaml:"metrics"`
	YARA    YARA    `yaml:"yara"`
	// RMM names the approved remote-management tools (sensor/detect/rmm).
	RMM RMM `yaml:"rmm"`
	// Files configures file activity under Watch and ransomware protection.
	Files Files `yaml:"files"`
	// ForwardTelemetry ships process and file telemetry, not only alerts
	// and health, to the collector.
	ForwardTelemetry bool `yaml:"forward_telemetry"`
	// KillSwitch configures which fleet commands this sensor obeys.
	KillSwitch KillSwitch `yaml:"killswitch"`
	// RuleBundles configures signed rule bundles from the collector.
	RuleBundles RuleBundles `yaml:"rule_bundles"`
	// Response confines what an enforce-mode sensor acts on.
	Response Response `yaml:"response"`
}

// Response confines the local response. For benchmarks and tests that run
// an enforce-mode sensor in the host's PID namespace of a shared machine
// (bench/ransombench -placement host): without it such a sensor acts on
// every process of the machine (its RMM rules, its kernel layer's marking
// of RMM agents and the fresh-exec tripwire that follows).
type Response struct {
	// OnlyUnder, when not 0, confines every action to that pid and its
	// descendants: the responder's kills and stops (others are refused and
	// the refusal written into the alert), the judgements of processes a
	// kernel tripwire stopped (others are resumed), and the marking of RMM
	// agents in the kernel (others are not marked, so the kernel's tamper
	// and fresh-exec tripwires never act on their trees). Detection is not
	// confined. 0 (the default): every process.
	OnlyUnder int `yaml:"only_under"`
}

// Collector is where alerts go.
type Collector struct {
	// Disabled runs standalone: local sinks and local response only.
	Disabled          bool          `yaml:"disabled"`
	URL               string        `yaml:"url"`
	EnrollTokenFile   string        `yaml:"enroll_token_file"`
	CAFile            string        `yaml:"ca_file"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	FlushInterval     time.Duration `yaml:"flush_interval"`
	BatchEvents       int           `yaml:"batch_events"`
	// SpoolBytes bounds the durable spool (spool_dir) holding events while
	// the collector is away; beyond it telemetry is dropped first, alerts
	// use a further reserve of a quarter of it.
	SpoolBytes int64 `yaml:"spool_bytes"`
}

// Kernel configures the eBPF kernel layer: the process feed and the
// tripwires that keep acting while the sensor is down.
type Kernel struct {
	// Mode is auto (use it where the kernel allows, else run without and
	// report the tamper protection missing), required (failing to load is
	// an error) or off.
	Mode string `yaml:"mode"`
	// PinDir is the bpffs directory for its pins.
	PinDir string `yaml:"pin_dir"`
	// ProcRingBytes and TamperRingBytes size the process and the tripwire
	// ring (kernel.DefaultProcRing, kernel.DefaultTamperRing): a power of
	// two multiple of the page size. Each costs twice its size in resident
	// memory.
	ProcRingBytes   int `yaml:"proc_ring_bytes"`
	TamperRingBytes int `yaml:"tamper_ring_bytes"`
	// AgentIOUring is what a process under an RMM agent that uses io_uring
	// meets: stop (it is stopped in the kernel and its tree ended: a
	// ring's file operations pass every path tripwire) or allow (for a
	// fleet whose agents run programs built on rings).
	AgentIOUring string `yaml:"agent_io_uring"`
}

// Values of kernel.agent_io_uring.
const (
	AgentIOUringStop  = "stop"
	AgentIOUringAllow = "allow"
)

// The kernel rings' defaults and bounds, as sensor/kernel has them (a test
// compares them; config stays free of the eBPF loader).
const (
	DefaultProcRing   = 1 << 20
	DefaultTamperRing = 128 << 10
	minProcRing       = 512 << 10
	minTamperRing     = 16 << 10
	maxRing           = 256 << 20
)

// Process configures the process source.
type Process struct {
	Backend      string        `yaml:"backend"` // auto | netlink | poll
	PollInterval time.Duration `yaml:"poll_interval"`
	ProcRoot     string        `yaml:"proc_root"`
}

// Log configures the sensor's own log (stderr).
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen is host:port for /metrics; empty disables it. Default is
	// loopback only: the till's metrics are not for the shop network.
	Listen string `yaml:"listen"`
}

// KillSwitch configures the sensor's end of the fleet kill-switch.
type KillSwitch struct {
	// Disabled stops the sensor from polling for commands at all.
	Disabled bool `yaml:"disabled"`
	// Keys are responder public keys (.pub from tillwatch keys gen) this
	// sensor pins; approvals count only from these (--killswitch-key).
	Keys []string `yaml:"keys"`
	// CollectorKeys pin extra collector keys, for rotation: deploy the next
	// collector key here before the collector switches to it.
	CollectorKeys []string `yaml:"collector_keys"`
	// Approvals (M) and MaxHosts must match the collector's policy; the
	// sensor enforces them itself.
	Approvals int `yaml:"approvals"`
	MaxHosts  int `yaml:"max_hosts"`
	// BudgetCommands is how many single-key destructive commands (one
	// responder signature) one key may have run on this host per
	// BudgetWindow; a second responder's signature lifts it.
	BudgetCommands int           `yaml:"budget_commands"`
	BudgetWindow   time.Duration `yaml:"budget_window"`
	// AllowedRoots bound quarantine-file, kill-process by path and scan.
	AllowedRoots []string `yaml:"allowed_roots"`
	// QuarantineDir (default <state_dir>/quarantine) is root-only.
	QuarantineDir string `yaml:"quarantine_dir"`
}

// RuleBundles: which rule-signing keys this sensor pins. Without keys it
// never loads a bundle from its collector.
type RuleBundles struct {
	Keys           []string `yaml:"keys"`
	AllowDowngrade bool     `yaml:"allow_downgrade"`
}

// Default returns the configuration used when a key is not set.
func Default() Config {
	return Config{
		Mode:     "enforce",
		StateDir: "/var/lib/tillwatch",
		SpoolDir: "/var/lib/tillwatch/spool",
		Collector: Collector{
			HeartbeatInterval: 30 * time.Second,
			FlushInterval:     time.Second,
			BatchEvents:       500,
			SpoolBytes:        256 << 20,
		},
		Process: Process{Backend: "auto", PollInterval: time.Second, ProcRoot: "/proc"},
		Kernel:  Kernel{Mode: "auto", PinDir: "/sys/fs/bpf/tillwatch", ProcRingBytes: DefaultProcRing, TamperRingBytes: DefaultTamperRing, AgentIOUring: AgentIOUringStop},
		Log:     Log{Level: "info", Format: "text"},
		Metrics: Metrics{Listen: "127.0.0.1:9464"},
		Files:   Files{Backend: "auto", Canaries: true, Guard: true, OpenPermission: OpenPermissionAlways},
		RMM:     RMM{ScanInterval: 60 * time.Second},
		YARA:    YARA{Enabled: true, Workers: 1, Queue: 256, MaxFileSize: 32 << 20, Timeout: 10 * time.Second, SweepCPU: 0.25},
		KillSwitch: KillSwitch{Approvals: 2, MaxHosts: 5, BudgetCommands: 10, BudgetWindow: time.Hour,
			AllowedRoots: []string{"/tmp", "/var/tmp", "/dev/shm", "/home", "/opt", "/srv", "/root"}},
	}
}

// Load reads path over the defaults.
func Load(path string) (Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	if err := cfgfile.Load(path, &c); err != nil {
		return c, err
	}
	return c, nil
}

// Validate reports every problem, each naming its key and what to do.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.Mode != "monitor" && c.Mode != "enforce" {
		bad("mode", "%q is not monitor or enforce", c.Mode)
	}
	if c.StateDir == "" {
		bad("state_dir", "must be set")
	}
	if c.SpoolDir == "" {
		bad("spool_dir", "must be set")
	}
	for _, w := range c.Watch {
		fi, err := os.Stat(w)
		switch {
		case err != nil:
			bad("watch", "%s: %v", w, errors.Unwrap(err))
		case !fi.IsDir():
			bad("watch", "%s is not a directory", w)
		}
	}
	for _, r := range c.Rules {
		if fi, err := os.Stat(r); err != nil || !fi.IsDir() {
			bad("rules", "%s is not a readable directory", r)
		}
	}
	if c.AlertsOut != "" && c.AlertsOut != "-" {
		if fi, err := os.Stat(filepath.Dir(c.AlertsOut)); err != nil || !fi.IsDir() {
			bad("alerts_out", "directory of %s does not exist", c.AlertsOut)
		}
	}
	if !c.Collector.Disabled {
		if c.Collector.URL == "" {
			bad("collector.url", "required (or run standalone with --no-collector)")
		} else if u, err := url.Parse(c.Collector.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("collector.url", "%q is not an https:// URL", c.Collector.URL)
		}
		if c.Collector.CAFile == "" {
			bad("collector.ca_file", "required: the collector's ca.pem to pin (--ca)")
		} else if _, err := os.Stat(c.Collector.CAFile); err != nil {
			bad("collector.ca_file", "%v", err)
		}
		if c.Collector.EnrollTokenFile != "" {
			if _, err := os.Stat(c.Collector.EnrollTokenFile); err != nil {
				bad("collector.enroll_token_file", "%v", err)
			}
		}
		if c.Collector.HeartbeatInterval < time.Second {
			bad("collector.heartbeat_interval", "%s is below 1s", c.Collector.HeartbeatInterval)
		}
		if c.Collector.FlushInterval <= 0 {
			bad("collector.flush_interval", "must be positive")
		}
		if c.Collector.BatchEvents < 1 || c.Collector.BatchEvents > 5000 {
			bad("collector.batch_events", "%d: want 1-5000", c.Collector.BatchEvents)
		}
		if c.Collector.SpoolBytes < 1<<20 {
			bad("collector.spool_bytes", "%d: want at least 1 MiB (1048576)", c.Collector.SpoolBytes)
		}
	}
	switch c.Process.Backend {
	case "auto", "netlink", "poll":
	default:
		bad("process.backend", "%q is not auto, netlink or poll", c.Process.Backend)
	}
	switch c.Kernel.Mode {
	case "auto", "required", "off":
	default:
		bad("kernel.mode", "%q is not auto, required or off", c.Kernel.Mode)
	}
	switch c.Kernel.AgentIOUring {
	case AgentIOUringStop, AgentIOUringAllow:
	default:
		bad("kernel.agent_io_uring", "%q is not %s or %s", c.Kernel.AgentIOUring, AgentIOUringStop, AgentIOUringAllow)
	}
	if c.Kernel.Mode != "off" && (!filepath.IsAbs(c.Kernel.PinDir) || filepath.Clean(c.Kernel.PinDir) != c.Kernel.PinDir || !strings.HasPrefix(c.Kernel.PinDir, "/sys/fs/bpf/")) {
		bad("kernel.pin_dir", "%q: want a clean absolute path below /sys/fs/bpf/", c.Kernel.PinDir)
	}
	for _, r := range []struct {
		key    string
		n, min int
	}{{"kernel.proc_ring_bytes", c.Kernel.ProcRingBytes, minProcRing}, {"kernel.tamper_ring_bytes", c.Kernel.TamperRingBytes, minTamperRing}} {
		if page := os.Getpagesize(); r.n < r.min || r.n < page || r.n > maxRing || r.n&(r.n-1) != 0 || r.n%page != 0 {
			bad(r.key, "%d: want a power of two multiple of the page size (%d), from %d to %d", r.n, page, r.min, maxRing)
		}
	}
	if c.Process.PollInterval < 50*time.Millisecond {
		bad("process.poll_interval", "%s is below 50ms", c.Process.PollInterval)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q is not text or json", c.Log.Format)
	}
	switch c.Files.Backend {
	case "auto", "fanotify", "fsnotify":
	default:
		bad("files.backend", "%q is not auto, fanotify or fsnotify", c.Files.Backend)
	}
	switch c.Files.OpenPermission {
	case OpenPermissionAlways, OpenPermissionUnlessKernel:
	default:
		bad("files.open_permission", "%q is not %s or %s", c.Files.OpenPermission, OpenPermissionAlways, OpenPermissionUnlessKernel)
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%v", err)
		}
	}
	if len(c.HostID) > 256 {
		bad("host_id", "longer than 256 characters")
	}
	for i, n := range c.RMM.Approved {
		if n == "" || strings.ContainsAny(n, " /\\") {
			bad("rmm.approved", "entry %d %q is not a catalog id (e.g. tactical-rmm)", i+1, n)
		}
	}
	if c.RMM.ScanInterval < 5*time.Second || c.RMM.ScanInterval > 24*time.Hour {
		bad("rmm.scan_interval", "%s: want 5s-24h", c.RMM.ScanInterval)
	}
	if y := c.YARA; y.Enabled {
		if y.Workers < 1 || y.Workers > 64 {
			bad("yara.workers", "%d: want 1-64", y.Workers)
		}
		if y.Queue < 1 {
			bad("yara.queue", "%d: want at least 1", y.Queue)
		}
		if y.MaxFileSize < 1 {
			bad("yara.max_file_size", "%d: want a positive number of bytes", y.MaxFileSize)
		}
		if y.Timeout <= 0 {
			bad("yara.timeout", "%v: want a positive duration such as 10s", y.Timeout)
		}
		if y.SweepCPU <= 0 || y.SweepCPU > 1 {
			bad("yara.sweep_cpu", "%v: want a share in (0,1]", y.SweepCPU)
		}
	}
	for _, k := range c.RuleBundles.Keys {
		if _, err := os.Stat(k); err != nil {
			bad("rule_bundles.keys", "%v", err)
		}
	}
	if c.Response.OnlyUnder < 0 {
		bad("response.only_under", "%d: want a pid, or 0 for every process", c.Response.OnlyUnder)
	}
	ks := c.KillSwitch
	for _, k := range append(slices.Clone(ks.Keys), ks.CollectorKeys...) {
		if _, err := os.Stat(k); err != nil {
			bad("killswitch.keys", "%v", err)
		}
	}
	if ks.Approvals < 1 || ks.Approvals > 16 {
		bad("killswitch.approvals", "%d: want 1-16", ks.Approvals)
	}
	if ks.MaxHosts < 1 {
		bad("killswitch.max_hosts", "%d: want at least 1", ks.MaxHosts)
	}
	if ks.BudgetCommands < 1 || ks.BudgetCommands > 10000 {
		bad("killswitch.budget_commands", "%d: want 1-10000", ks.BudgetCommands)
	}
	if ks.BudgetWindow < time.Minute || ks.BudgetWindow > 7*24*time.Hour {
		bad("killswitch.budget_window", "%s: want 1m-168h", ks.BudgetWindow)
	}
	for _, r := range ks.AllowedRoots {
		if !filepath.IsAbs(r) || filepath.Clean(r) == "/" {
			bad("killswitch.allowed_roots", "%q must be an absolute directory other than /", r)
		}
	}
	if ks.QuarantineDir != "" && !filepath.IsAbs(ks.QuarantineDir) {
		bad("killswitch.quarantine_dir", "%q must be absolute", ks.QuarantineDir)
	}
	return errors.Join(errs...)
}

// YARA configures YARA scanning of executed binaries, written executables
// and scripts, process memory on request, and sweeps.
type YARA struct {
	Enabled     bool          `yaml:"enabled"`
	Workers     int           `yaml:"workers"`       // scan goroutines
	Queue       int           `yaml:"queue"`         // pending scans; more are dropped and reported
	MaxFileSize int64         `yaml:"max_file_size"` // bytes; larger files are skipped and reported
	Timeout     time.Duration `yaml:"timeout"`       // per scan
	SweepCPU    float64       `yaml:"sweep_cpu"`     // share of a core a sweep thread may use
}

// Files configures the file-activity source (active when watch is not
// empty) and ransomware protection on the watched folders.
type Files struct {
	// Backend is auto (fanotify, else fsnotify with the reason logged),
	// fanotify or fsnotify (degraded: no acting process, no synchronous stop).
	Backend string `yaml:"backend"`
	// Canaries plants decoy files in every watched folder (state kept in
	// state_dir/canaries) and stops whoever writes, renames or deletes one.
	Canaries bool `yaml:"canaries"`
	// Guard scores file behaviour per process tree and, in enforce mode,
	// stops an encryptor before its next open returns.
	Guard bool `yaml:"guard"`
	// QuarantineEncryptor moves the executable of a killed encryptor into
	// the quarantine (killswitch.quarantine_dir), within
	// killswitch.allowed_roots only, never a shell or interpreter. Off by
	// default: a false positive would take a program off the till, not
	// just stop it once.
	QuarantineEncryptor bool `yaml:"quarantine_encryptor"`
	// OpenPermission is when the fanotify content group asks for a
	// permission event on every open in the watched trees: always, or
	// unless-kernel (not while the kernel layer's decoy and burst
	// tripwires are armed: they hold an encryptor in the kernel instead,
	// and every open, reads included, no longer waits for the sensor).
	OpenPermission string `yaml:"open_permission"`
}

// Values of files.open_permission.
const (
	OpenPermissionAlways       = "always"
	OpenPermissionUnlessKernel = "unless-kernel"
)

// RMM configures the RMM-agent watch. Names in Approved are catalog ids or
// aliases (rules/rmm/catalog.yaml); the sensor refuses to start with a name
// the catalog does not know.
type RMM struct {
	// Approved lists the remote-management tools this host may run; every
	// other catalogued tool that starts or is installed raises an alert.
	Approved []string `yaml:"approved"`
	// KillAgent lets an enforce-mode kill reach the agent itself, not only
	// the process tree it started.
	KillAgent bool `yaml:"kill_agent"`
	// ScanInterval is how often install paths are scanned. Default 60s.
	ScanInterval time.Duration `yaml:"scan_interval"`
}
