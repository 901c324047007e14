package agent

import (
	"errors"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/config"
	yaradetect "github.com/tillwatch/tillwatch/sensor/detect/yara"
	yarascan "github.com/tillwatch/tillwatch/sensor/yara"
)

// wireYARA adds YARA: one component that is both a detector (queues scans,
// returns finished ones) and a source (runs the scan workers and the rule
// watcher); see sensor/detect/yara. It returns the engine for the
// kill-switch's scan action, nil when YARA is off (by config, or in a build
// without cgo).
func (s *Sensor) wireYARA(cfg config.Config) (*yarascan.Engine, error) {
	if !cfg.YARA.Enabled {
		return nil, nil
	}
	log := s.log
	ylog := log.With(logkey.Component, "yara")
	eng, err := yarascan.New(yarascan.Options{
		Builtin: rules.Builtin, BuiltinDir: "yara", Dirs: yarascan.TreeDirs(cfg.Rules),
		MaxFileSize: cfg.YARA.MaxFileSize, Timeout: cfg.YARA.Timeout, SkipSHA256: yarascan.SelfSHA256(),
		Log: ylog, Registerer: s.reg, Health: s.pipe.Health().Report, Hashes: s.hashes,
	})
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		log.Warn("YARA is off: this sensor was built without cgo", logkey.Error, err)
	case err != nil:
		return nil, cfgfile.Usagef("rules (yara): %v", err)
	default:
		yd, err := yaradetect.New(yaradetect.Options{
			Engine: eng, Workers: cfg.YARA.Workers, Queue: cfg.YARA.Queue,
			Sweep: yarascan.SweepOptions{Threads: 1, CPU: cfg.YARA.SweepCPU},
			Log:   ylog, Registerer: s.reg, Health: s.pipe.Health().Report,
		})
		if err != nil {
			return nil, err
		}
		s.pipe.AddSource(yd)
		s.pipe.AddDetector(yd)
		s.memScan = yd
		return eng, nil
	}
	return nil, nil
}
