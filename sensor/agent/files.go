package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/action"
	"github.com/tillwatch/tillwatch/sensor/canary"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/detect/ransomware"
	"github.com/tillwatch/tillwatch/sensor/fileactivity"
	"github.com/tillwatch/tillwatch/sensor/fileguard"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// wireFiles adds the file-activity source, the synchronous file guard with
// its decoys, and the ransomware detector, when folders are watched.
func (s *Sensor) wireFiles(cfg config.Config, cat *rmm.Catalog) error {
	if len(cfg.Watch) == 0 {
		return nil
	}
	r, err := loadRansomwareRules(cfg.Rules)
	if err != nil {
		return cfgfile.Usage(err)
	}
	watch := make([]string, 0, len(cfg.Watch))
	for _, w := range cfg.Watch {
		abs, err := filepath.Abs(w)
		if err != nil {
			return cfgfile.Usagef("watch: %v", err)
		}
		watch = append(watch, abs)
	}
	var set *canary.Set
	if cfg.Files.Canaries {
		set, err = canary.Plant(cfg.StateDir, watch)
		if err != nil {
			// Some decoys could not be planted (a read-only folder): the
			// rest still guard; say which.
			s.log.Warn("some decoy files could not be planted", logkey.Error, err)
		}
	}
	var hook fileactivity.Hook
	if cfg.Files.Guard {
		// RMM lineage lowers the stop threshold of trees under an agent
		// (rules/ransomware rmm_descendant_threshold_factor).
		lineage, err := newRMMLineage(cat, cfg.RMM.Approved, cfg.Process.ProcRoot)
		if err != nil {
			return cfgfile.Usagef("rmm.approved: %v", err)
		}
		var quarantine func(string) (bool, string)
		if cfg.Files.QuarantineEncryptor {
			quarantine = s.quarantineEncryptor
		}
		s.guard = fileguard.New(fileguard.Options{
			Rules: r, Enforce: cfg.Mode == "enforce", ProcRoot: cfg.Process.ProcRoot, Self: os.Getpid(),
			Canaries: set, Emit: s.pipe.Emit, Log: s.log, RMM: lineage, Quarantine: quarantine,
		})
		hook = s.guard
	}
	s.canaries = set
	// The kernel layer's decoy and burst tripwires (sensor/agent/kernel_linux.go);
	// while they are armed, files.open_permission unless-kernel drops the
	// permission event per open.
	armed, why := s.armKernelFiles(cfg, watch)
	fcfg := fileactivity.Config{Backend: cfg.Files.Backend, Paths: watch, ProcRoot: cfg.Process.ProcRoot, Self: os.Getpid()}
	switch {
	case armed && cfg.Files.OpenPermission == config.OpenPermissionUnlessKernel:
		fcfg.NoOpenPerm, fcfg.NoOpenPermWhy = true, "the kernel layer's decoy and burst tripwires hold an encryptor (files.open_permission: unless-kernel)"
		if s.guard != nil {
			s.guard.SetNoOpenPerm(true)
		}
		s.log.Info("file guard: no permission event per open; the kernel tripwires stop encryptors", "kernel", why)
	case armed:
		s.log.Info("file guard: permission event on every open (files.open_permission: always), kernel tripwires armed too", "kernel", why)
	default:
		s.log.Info("file guard: permission event on every open; kernel tripwires not armed", "why", why)
	}
	src, err := fileactivity.New(fcfg, hook, s.log, s.reg)
	if err != nil {
		return cfgfile.Usagef("files: %v", err)
	}
	src.OnHealth(s.pipe.Health().Report)
	s.pipe.AddSource(src)
	s.pipe.AddDetector(ransomware.NewDetector(r))
	return nil
}

// loadRansomwareRules loads the built-in thresholds; a --rules folder with
// a ransomware/ subfolder replaces them (the last one wins).
func loadRansomwareRules(extra []string) (*ransomware.Rules, error) {
	r, err := ransomware.LoadRules(rules.Builtin, "ransomware")
	if err != nil {
		return nil, fmt.Errorf("built-in rules: %w", err)
	}
	for _, dir := range extra {
		if fi, err := os.Stat(filepath.Join(dir, "ransomware")); err != nil || !fi.IsDir() {
			continue
		}
		if r, err = ransomware.LoadRules(os.DirFS(dir), "ransomware"); err != nil {
			return nil, fmt.Errorf("rules %s: %w", dir, err)
		}
	}
	return r, nil
}

// quarantineEncryptor quarantines a killed encryptor's executable through
// the kill-switch action executor (wired after the file source; it exists
// by the time a verdict comes), so the same safety checks, allowed roots
// and restore path apply as to a quarantine-file command.
func (s *Sensor) quarantineEncryptor(path string) (bool, string) {
	if s.actions == nil {
		return false, "no action executor"
	}
	res := s.actions.Run(context.Background(), action.Request{
		CommandID: "local:ransomware", Action: action.ActQuarantineFile, Params: map[string]string{"path": path},
	})
	return res.Status == action.StatusOK || res.Status == action.StatusNoop, res.Detail
}
