package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/internal/rulebundle"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/detect/execpath"
	rmmdetect "github.com/tillwatch/tillwatch/sensor/detect/rmm"
	sigmadetect "github.com/tillwatch/tillwatch/sensor/detect/sigma"
	"github.com/tillwatch/tillwatch/sensor/rmm"
	"github.com/tillwatch/tillwatch/sensor/rulesync"
	"github.com/tillwatch/tillwatch/sensor/uplink"
	yarascan "github.com/tillwatch/tillwatch/sensor/yara"
)

// ErrRestart is what Run returns when the sensor stopped to start again
// into a new rule bundle; cmd/tillwatch-sensor re-executes itself.
var ErrRestart = errors.New("restarting to load a new rule bundle")

// openRuleBundles reads which signed bundle is current and adds its folder
// to the rule folders, before any rule is loaded. The syncer that fetches
// newer ones runs only with a collector and pinned rule-signing keys. The
// string, when not empty, says why the sensor runs older rules than its
// current bundle (a health event).
func openRuleBundles(cfg *config.Config, log *slog.Logger) (*rulesync.Syncer, string, error) {
	var keys []killswitch.PublicKey
	for _, p := range cfg.RuleBundles.Keys {
		pub, err := killswitch.LoadPublicKey(p)
		if err != nil {
			return nil, "", cfgfile.Usagef("rule_bundles.keys: %v", err)
		}
		keys = append(keys, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: p})
	}
	s, err := rulesync.New(rulesync.Options{
		Keys: keys, StateDir: cfg.StateDir, AllowDowngrade: cfg.RuleBundles.AllowDowngrade,
		Validate: validateRuleDir, Log: log,
	})
	if err != nil {
		return nil, "", cfgfile.Usagef("state_dir: %v", err)
	}
	// Defence in depth: a bundle made current that no longer loads (one an
	// older sensor accepted, or a loader that became stricter) must not
	// keep the sensor down. The previous bundle is used instead if it
	// loads, else none (built-in and local rules), and the sensor reports
	// itself degraded until a good bundle arrives.
	var problems []string
	for _, c := range s.Candidates() {
		if !isDir(c.Dir) {
			continue
		}
		if err := validateRuleDir(c.Dir); err != nil {
			log.Error("rule bundle does not load; falling back to the previous rules", "serial", c.Serial, logkey.Error, err)
			problems = append(problems, fmt.Sprintf("rule bundle %d does not load: %v", c.Serial, err))
			continue
		}
		cfg.Rules = append(cfg.Rules, c.Dir)
		if len(problems) > 0 {
			problems = append(problems, fmt.Sprintf("running rule bundle %d", c.Serial))
		}
		break
	}
	if len(problems) > 0 && !slices.ContainsFunc(s.Candidates(), func(c rulesync.Candidate) bool { return slices.Contains(cfg.Rules, c.Dir) }) {
		problems = append(problems, "running the built-in and local rules only")
	}
	return s, strings.Join(problems, "; "), nil
}

// ruleLoaders loads one kind of rule from a candidate bundle folder with
// the sensor's own loader, on top of the built-in rules as at start. There
// is one per rulebundle.Folders entry (a test holds the two together), so
// no kind a bundle may carry escapes the trial load.
var ruleLoaders = map[string]func(dir string) error{
	"exec": func(dir string) error {
		_, err := execpath.LoadRules(os.DirFS(dir), "exec")
		return err
	},
	"ransomware": func(dir string) error {
		if !isDir(filepath.Join(dir, "ransomware")) {
			return nil
		}
		_, err := loadRansomwareRules([]string{dir})
		return err
	},
	"rmm": func(dir string) error {
		cat, err := rmm.LoadCatalog(rules.Builtin, "rmm")
		if err != nil {
			return err
		}
		fsys := os.DirFS(dir)
		if more, err := rmm.LoadCatalog(fsys, "rmm"); err != nil {
			return err
		} else if err := cat.Merge(more); err != nil {
			return err
		}
		_, err = rmmdetect.LoadExtraRules(fsys, "rmm")
		return err
	},
	"sigma": func(dir string) error {
		// A Sigma rule that does not load is reported and skipped at
		// start, never fatal; a bundle whose sigma/ cannot even be read
		// is refused.
		_, ps := sigmadetect.LoadAll(rules.Builtin, "sigma", []string{dir})
		for _, p := range ps {
			if p.Level == sigmadetect.LevelError && p.Line == 0 && strings.HasSuffix(p.File, "sigma") {
				return errors.New(p.String())
			}
		}
		return nil
	},
	"yara": func(dir string) error {
		if !isDir(filepath.Join(dir, "yara")) {
			return nil
		}
		if _, err := yarascan.Load(rules.Builtin, "yara", yarascan.TreeDirs([]string{dir})); err != nil && !errors.Is(err, yarascan.ErrDisabled) {
			return err
		}
		return nil
	},
}

// validateRuleDir is the trial load: every kind of rule in a candidate
// bundle folder is loaded the way the sensor will, so a bundle that would
// stop the sensor from starting is never made current. It reports every
// kind that fails.
func validateRuleDir(dir string) error {
	var errs []error
	for _, kind := range rulebundle.Folders {
		load, ok := ruleLoaders[kind]
		if !ok {
			errs = append(errs, fmt.Errorf("%s rules: no trial loader", kind))
			continue
		}
		if err := load(dir); err != nil {
			errs = append(errs, fmt.Errorf("%s rules: %w", kind, err))
		}
	}
	return errors.Join(errs...)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// bundleHeartbeats passes every heartbeat answer's rule serial to the
// syncer.
type bundleHeartbeats struct {
	*uplink.Uplink
	sync *rulesync.Syncer
}

func (b bundleHeartbeats) Heartbeat(ctx context.Context, hb api.Heartbeat) (api.HeartbeatResponse, error) {
	resp, err := b.Uplink.Heartbeat(ctx, hb)
	if err == nil && resp.RulesSerial > 0 {
		b.sync.Offer(resp.RulesSerial)
	}
	return resp, err
}

// lazyFetcher reaches the uplink, which is built after the rule folders
// are settled.
type lazyFetcher struct{ s *Sensor }

func (l lazyFetcher) FetchRules(ctx context.Context, have int64) ([]byte, error) {
	if l.s.uplink == nil {
		return nil, errors.New("no collector")
	}
	return l.s.uplink.FetchRules(ctx, have)
}

// requestRestart is called by the syncer once a bundle is current.
func (s *Sensor) requestRestart() {
	s.restartOnce.Do(func() { close(s.restart) })
}
