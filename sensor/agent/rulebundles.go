package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/killswitch"
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
// newer ones runs only with a collector and pinned rule-signing keys.
func openRuleBundles(cfg *config.Config, log *slog.Logger) (*rulesync.Syncer, error) {
	var keys []killswitch.PublicKey
	for _, p := range cfg.RuleBundles.Keys {
		pub, err := killswitch.LoadPublicKey(p)
		if err != nil {
			return nil, cfgfile.Usagef("rule_bundles.keys: %v", err)
		}
		keys = append(keys, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: p})
	}
	s, err := rulesync.New(rulesync.Options{
		Keys: keys, StateDir: cfg.StateDir, AllowDowngrade: cfg.RuleBundles.AllowDowngrade,
		Validate: validateRuleDir, Log: log,
	})
	if err != nil {
		return nil, cfgfile.Usagef("state_dir: %v", err)
	}
	if _, dir := s.Current(); dir != "" {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			cfg.Rules = append(cfg.Rules, dir)
		}
	}
	return s, nil
}

// validateRuleDir loads a candidate bundle folder with the sensor's own
// loaders, on top of the built-in rules as at start, so a bundle that would
// stop the sensor from starting is never made current.
func validateRuleDir(dir string) error {
	fsys := os.DirFS(dir)
	if _, err := execpath.LoadRules(fsys, "exec"); err != nil {
		return fmt.Errorf("exec rules: %w", err)
	}
	// A Sigma rule that does not load is reported and skipped at start,
	// never fatal; a bundle whose sigma/ cannot even be read is refused.
	if _, ps := sigmadetect.LoadAll(rules.Builtin, "sigma", []string{dir}); len(ps) > 0 {
		for _, p := range ps {
			if p.Level == sigmadetect.LevelError && p.Line == 0 && strings.HasSuffix(p.File, "sigma") {
				return fmt.Errorf("sigma rules: %s", p)
			}
		}
	}
	cat, err := rmm.LoadCatalog(rules.Builtin, "rmm")
	if err != nil {
		return err
	}
	if more, err := rmm.LoadCatalog(fsys, "rmm"); err != nil {
		return fmt.Errorf("rmm catalog: %w", err)
	} else if err := cat.Merge(more); err != nil {
		return fmt.Errorf("rmm catalog: %w", err)
	}
	if _, err := rmmdetect.LoadExtraRules(fsys, "rmm"); err != nil {
		return fmt.Errorf("rmm rules: %w", err)
	}
	if _, err := os.Stat(dir + "/yara"); err == nil {
		if _, err := yarascan.Load(rules.Builtin, "yara", yarascan.TreeDirs([]string{dir})); err != nil && !errors.Is(err, yarascan.ErrDisabled) {
			return fmt.Errorf("yara rules: %w", err)
		}
	}
	return nil
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
