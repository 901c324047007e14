// Package check reports what the host supports for the sensor and, when a
// configuration is given, whether the sensor can run with it
// (`tillwatch-sensor check [-c FILE]`).
package check

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/tillwatch/tillwatch/internal/buildinfo"
	"github.com/tillwatch/tillwatch/sensor/action"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/kernel"
	"github.com/tillwatch/tillwatch/sensor/privilege"
	"github.com/tillwatch/tillwatch/sensor/process"
	yarascan "github.com/tillwatch/tillwatch/sensor/yara"
)

// Feature is one capability of the host.
type Feature struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Detail    string `json:"detail"`
}

// Report is the outcome of a check.
type Report struct {
	Version  string    `json:"version"`
	OS       string    `json:"os"`
	Features []Feature `json:"features"`
	// ConfigChecked says whether Config, CanRun and Blocker mean anything:
	// a check without a config answers only "what does this host support".
	ConfigChecked bool          `json:"config_checked"`
	Config        config.Config `json:"config"`
	CanRun        bool          `json:"can_run"`
	Blocker       string        `json:"blocker,omitempty"`
}

// Run probes the host. It changes nothing on it. With checkConfig it also
// validates cfg and decides whether the sensor can run with it; without,
// cfg (the defaults) only says where to probe and the report leaves CanRun
// false and ConfigChecked false.
func Run(cfg config.Config, checkConfig bool, _ *slog.Logger) Report {
	r := Report{Version: buildinfo.Version, OS: runtime.GOOS + "/" + runtime.GOARCH, Config: cfg,
		ConfigChecked: checkConfig, CanRun: checkConfig}
	block := func(why string) {
		if r.CanRun {
			r.CanRun, r.Blocker = false, why
		}
	}
	if checkConfig {
		if err := cfg.Validate(); err != nil {
			block("config: " + strings.ReplaceAll(err.Error(), "\n", "; "))
		}
	}

	nl := process.Probe()
	r.add("process connector (netlink)", nl == nil, detail(nl, "exec/exit events in real time"))
	if cfg.Process.Backend == "netlink" && nl != nil {
		block("process.backend netlink: " + nl.Error())
	}
	r.add("process polling (gopsutil)", true, "fallback: processes shorter than the poll interval may be missed")

	if cfg.Kernel.Mode != "off" {
		for _, f := range kernel.Probe(cfg.Kernel.PinDir) {
			r.add(f.Name, f.Available, f.Detail)
		}
	} else {
		r.add("tamper protection", false, "missing: kernel.mode is off")
	}

	fa, fd := probeFanotify(cfg.Watch)
	r.add("fanotify", fa, fd)
	if yarascan.Enabled {
		r.add("yara", true, "compiled in, libyara "+yarascan.Version())
	} else {
		r.add("yara", false, "off: built without cgo (YARA scanning disabled)")
	}
	nft := action.ProbeIsolation()
	r.add("nftables", nft == nil, detail(nft, "host isolation by kill-switch (table inet tillwatch)"))

	caps, err := privilege.Effective(cfg.Process.ProcRoot)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		r.add("capabilities", true, "not a Linux host")
	case err != nil:
		r.add("capabilities", false, err.Error())
	default:
		var have, miss []string
		for _, c := range []int{privilege.CapSysAdmin, privilege.CapKill, privilege.CapSysPtrace, privilege.CapDACReadSearch, privilege.CapNetAdmin} {
			if caps.Has(c) {
				have = append(have, privilege.Names[c])
			} else {
				miss = append(miss, privilege.Names[c])
			}
		}
		r.add("capabilities", len(miss) == 0, fmt.Sprintf("have %v, missing %v", have, miss))
		if cfg.Mode == "enforce" && !caps.Has(privilege.CapKill) {
			block("enforce mode needs CAP_KILL: run as root or use --mode monitor")
		}
	}
	return r
}

func (r *Report) add(name string, ok bool, d string) {
	r.Features = append(r.Features, Feature{Name: name, Available: ok, Detail: d})
}

func detail(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

// Print writes the report for a person.
func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "tillwatch-sensor %s on %s\n\n", r.Version, r.OS)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range r.Features {
		mark := "yes"
		if !f.Available {
			mark = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, mark, f.Detail)
	}
	tw.Flush()
	if !r.ConfigChecked {
		fmt.Fprintln(w, "\nno config given: to check one, run tillwatch-sensor check -c FILE (or with run's flags)")
		return
	}
	c := r.Config
	fmt.Fprintf(w, "\neffective config:\n  mode: %s\n  state_dir: %s\n  spool_dir: %s\n  watch: %v\n  rules: %v\n  alerts_out: %q\n",
		c.Mode, c.StateDir, c.SpoolDir, c.Watch, c.Rules, c.AlertsOut)
	if c.Collector.Disabled {
		fmt.Fprintln(w, "  collector: disabled (standalone)")
	} else {
		fmt.Fprintf(w, "  collector: %s (ca %s, enroll token %q)\n", c.Collector.URL, c.Collector.CAFile, c.Collector.EnrollTokenFile)
	}
	fmt.Fprintf(w, "  process.backend: %s\n  metrics.listen: %q\n\n", c.Process.Backend, c.Metrics.Listen)
	if r.CanRun {
		fmt.Fprintln(w, "result: the sensor can run")
	} else {
		fmt.Fprintln(w, "result: the sensor cannot run: "+r.Blocker)
	}
}
