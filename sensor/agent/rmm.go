package agent

import (
	"fmt"
	"os"
	"runtime"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/config"
	rmmdetect "github.com/tillwatch/tillwatch/sensor/detect/rmm"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// wireRMM adds the RMM-agent watch: the install-path scanner (a source) and
// the RMM detector, with the catalog and behaviour rules from the built-in
// set plus the rmm/ folder of each extra rule folder.
func (s *Sensor) wireRMM(cfg config.Config, table *proctree.Table) (*rmm.Catalog, error) {
	cat, err := rmm.LoadCatalog(rules.Builtin, "rmm")
	if err != nil {
		return nil, cfgfile.Usagef("built-in rules (rmm catalog): %v", err)
	}
	rs, err := rmmdetect.LoadRules(rules.Builtin, "rmm")
	if err != nil {
		return nil, cfgfile.Usagef("built-in rules (rmm detections): %v", err)
	}
	for _, dir := range cfg.Rules {
		fsys := os.DirFS(dir)
		if more, err := rmm.LoadCatalog(fsys, "rmm"); err != nil {
			return nil, cfgfile.Usagef("rules %s (rmm catalog): %v", dir, err)
		} else if err := cat.Merge(more); err != nil {
			return nil, cfgfile.Usagef("rules %s (rmm catalog): %v", dir, err)
		}
		more, err := rmmdetect.LoadExtraRules(fsys, "rmm")
		if err != nil {
			return nil, cfgfile.Usagef("rules %s (rmm detections): %v", dir, err)
		}
		if err := rs.Merge(more); err != nil {
			return nil, cfgfile.Usagef("rules %s (rmm detections): %v", dir, err)
		}
	}
	bl, err := rmm.OpenBaseline(cfg.StateDir, nil)
	if err != nil {
		return nil, cfgfile.Usagef("state_dir: %v", err)
	}
	log := s.log.With(logkey.Component, "rmm")
	d, err := rmmdetect.New(rmmdetect.Options{
		Catalog: cat, Rules: rs, Approved: cfg.RMM.Approved, KillAgent: cfg.RMM.KillAgent, GOOS: runtime.GOOS,
		Table: table, Baseline: bl, Host: rmmdetect.NewProcHost(cfg.Process.ProcRoot, s.hashes), Log: log, Health: s.pipe.Health().Report,
	})
	if err != nil {
		return nil, cfgfile.Usage(err)
	}
	scan := &rmm.Scanner{Matcher: rmm.NewMatcher(cat, runtime.GOOS), Interval: cfg.RMM.ScanInterval,
		OnScan: func(n int, cut bool) {
			if cut {
				s.pipe.Health().Report("rmm-scan", event.HealthDegraded, fmt.Sprintf("install-path scan stopped at %d files", n))
			}
		}}
	s.pipe.AddSource(scan)
	s.pipe.AddDetector(d)
	log.Info("rmm watch on", "approved", cfg.RMM.Approved, "products", len(cat.Products), "rules", len(rs.Rules))
	return cat, nil
}
