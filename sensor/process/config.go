// Package process is the sensor's process source: it turns process exec and
// exit into ECS telemetry events and keeps the shared process table
// (sensor/proctree) current, so detectors can ask who started whom.
//
// On Linux it listens to the kernel's netlink process connector, which
// reports every fork, exec and exit as it happens. Elsewhere, or where the
// connector is unavailable (containers outside the init namespaces, missing
// CAP_NET_ADMIN), it falls back to polling the process list, which misses
// processes that live shorter than the poll interval.
package process

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// Backends (Config.Backend).
const (
	BackendAuto    = "auto"    // netlink if it works here, else poll
	BackendNetlink = "netlink" // the Linux proc connector; failing is an error
	BackendPoll    = "poll"    // diff the process list every PollInterval
)

// Defaults for Config.
const (
	DefaultPollInterval = time.Second
	DefaultProcRoot     = "/proc"
)

// Poll interval bounds: faster burns a till's CPU re-reading the process
// list, slower makes the fallback blind to all but long-lived processes.
const (
	minPollInterval = 10 * time.Millisecond
	maxPollInterval = time.Minute
)

// Config configures the process source. Zero fields take the defaults, so
// Config{} is valid.
type Config struct {
	// Backend is auto, netlink or poll. Default auto.
	Backend string `yaml:"backend"`
	// PollInterval is how often the poll backend lists processes. Default 1s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// ProcRoot is where procfs is mounted: /proc, or the host's /proc
	// bind-mounted into a container. Default /proc.
	ProcRoot string `yaml:"proc_root"`
}

// Default returns the configuration with every default filled in.
func Default() Config {
	return Config{Backend: BackendAuto, PollInterval: DefaultPollInterval, ProcRoot: DefaultProcRoot}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	switch c.Backend {
	case "", BackendAuto, BackendNetlink, BackendPoll:
	default:
		errs = append(errs, fmt.Errorf("process.backend %q: want auto, netlink or poll", c.Backend))
	}
	if c.PollInterval != 0 && (c.PollInterval < minPollInterval || c.PollInterval > maxPollInterval) {
		errs = append(errs, fmt.Errorf("process.poll_interval %s: want between %s and %s", c.PollInterval, minPollInterval, maxPollInterval))
	}
	if c.ProcRoot != "" && !filepath.IsAbs(c.ProcRoot) {
		errs = append(errs, fmt.Errorf("process.proc_root %q: want an absolute path", c.ProcRoot))
	}
	return errors.Join(errs...)
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	d := Default()
	if c.Backend == "" {
		c.Backend = d.Backend
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	if c.ProcRoot == "" {
		c.ProcRoot = d.ProcRoot
	}
	return c
}
