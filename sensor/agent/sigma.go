package agent

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/config"
	sigmadetect "github.com/tillwatch/tillwatch/sensor/detect/sigma"
)

// maxSigmaReasons bounds how many failing files the health event names.
const maxSigmaReasons = 5

// wireSigma loads rules/sigma plus each rule folder's sigma/ and adds the
// detector. A rule that does not load never stops the sensor: each is
// logged and one "sigma/rules" health event names them; rules that are
// valid but cannot run here (another OS, a log source or field the sensor
// has not) are counted in the start log and listed at debug level.
func (s *Sensor) wireSigma(cfg config.Config, log *slog.Logger) {
	log = log.With("component", "sigma")
	rs, ps := sigmadetect.LoadAll(rules.Builtin, "sigma", cfg.Rules)
	var failed []string
	for _, p := range ps {
		switch p.Level {
		case sigmadetect.LevelError:
			log.Warn("sigma rule skipped: fix it, then restart (check with `tillwatch rules lint DIR`)", "problem", p.String())
			failed = append(failed, p.String())
		default:
			log.Debug("sigma rule", "problem", p.String())
		}
	}
	for _, r := range rs {
		if why := r.Skip(runtime.GOOS); why != "" {
			log.Debug("sigma rule not run on this sensor", "file", r.File, "reason", why)
		}
	}
	sum := sigmadetect.Summarize(rs, ps, runtime.GOOS)
	log.Info("sigma rules loaded", "summary", sum.String())
	if len(failed) > 0 {
		shown := failed
		if len(shown) > maxSigmaReasons {
			shown = shown[:maxSigmaReasons]
		}
		s.pipe.Health().Report("sigma/rules", event.HealthDegraded, fmt.Sprintf("%d sigma rule file(s) do not load and are skipped: %s",
			sum.Errors, strings.Join(shown, "; ")))
	}
	s.pipe.AddDetector(sigmadetect.New(rs, runtime.GOOS))
}
