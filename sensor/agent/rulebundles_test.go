package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/rulebundle"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/rulesync"
)

// signedBundle builds a real signed bundle whose ransomware/thresholds.yaml
// is thresholds.
func signedBundle(t *testing.T, priv ed25519.PrivateKey, serial int64, thresholds []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "ransomware"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ransomware", "thresholds.yaml"), thresholds, 0o644); err != nil {
		t.Fatal(err)
	}
	b, _, err := rulebundle.Build(dir, serial, "test", priv, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goodThresholds is the built-in thresholds.yaml with a different window,
// so which set is loaded shows.
func goodThresholds(t *testing.T) []byte {
	t.Helper()
	b, err := fs.ReadFile(rules.Builtin, "ransomware/thresholds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return []byte(strings.Replace(string(b), "window: 60s", "window: 45s", 1))
}

var badThresholds = []byte("window: 60s\nalert_score: not-a-number\n")

func syncer(t *testing.T, state string, pub ed25519.PublicKey, validate func(string) error) *rulesync.Syncer {
	t.Helper()
	s, err := rulesync.New(rulesync.Options{
		Keys: []killswitch.PublicKey{{Role: killswitch.RoleResponder, Key: pub, Name: "rules"}}, StateDir: state, Validate: validate,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A signed bundle whose ransomware thresholds do not load used to pass the
// trial load (which skipped ransomware/), become current, and keep every
// sensor with watched folders from starting. It must be refused, with the
// running bundle kept.
func TestSignedBundleWithBadThresholdsIsRefused(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	s := syncer(t, state, pub, validateRuleDir)
	if err := s.Apply(signedBundle(t, priv, 1, goodThresholds(t))); err != nil {
		t.Fatalf("good bundle: %v", err)
	}
	err = s.Apply(signedBundle(t, priv, 2, badThresholds))
	if err == nil || !strings.Contains(err.Error(), "ransomware rules") {
		t.Fatalf("bundle with bad thresholds: %v, want refused for its ransomware rules", err)
	}
	if cur, _ := s.Current(); cur.Serial != 1 {
		t.Fatalf("current bundle is %d, want 1", cur.Serial)
	}
	cfg := config.Config{StateDir: state}
	if _, reason, err := openRuleBundles(&cfg, slog.New(slog.DiscardHandler)); err != nil || reason != "" {
		t.Fatalf("openRuleBundles: %q %v", reason, err)
	}
	r, err := loadRansomwareRules(cfg.Rules)
	if err != nil || r.Window != 45*time.Second {
		t.Fatalf("rules after the refused bundle: %+v %v, want bundle 1's (window 45s)", r, err)
	}
}

// A bad bundle already current (accepted by a sensor whose trial load
// skipped a kind) must not keep the sensor down: it starts on the previous
// bundle and says it is degraded.
func TestSensorWithUnloadableCurrentBundleFallsBack(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	state, watch := t.TempDir(), t.TempDir()
	old := syncer(t, state, pub, nil) // the old trial load: nothing checked
	if err := old.Apply(signedBundle(t, priv, 1, goodThresholds(t))); err != nil {
		t.Fatal(err)
	}
	if err := old.Apply(signedBundle(t, priv, 2, badThresholds)); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.StateDir, cfg.SpoolDir, cfg.Watch = state, filepath.Join(state, "spool"), []string{watch}
	cfg.Collector.Disabled = true
	cfg.Mode = "monitor"
	cfg.Files.Canaries = false
	cfg.Kernel.Mode = "off" // pins would outlive the test
	s, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("sensor with a bad current bundle did not start: %v", err)
	}
	if got := s.pipe.Health().States()["rules"]; got != event.HealthDegraded {
		t.Errorf("rules health %q, want degraded; states %v", got, s.pipe.Health().States())
	}
	if n := len(s.cfg.Rules); n == 0 || s.cfg.Rules[n-1] != filepath.Join(state, "rules", "1") {
		t.Errorf("rule folders %v, want bundle 1 last", s.cfg.Rules)
	}

	// With no good bundle left at all, the built-in rules run.
	if err := os.RemoveAll(filepath.Join(state, "rules", "1")); err != nil {
		t.Fatal(err)
	}
	c2 := config.Config{StateDir: state}
	_, reason, err := openRuleBundles(&c2, slog.New(slog.DiscardHandler))
	if err != nil || len(c2.Rules) != 0 || !strings.Contains(reason, "built-in") {
		t.Fatalf("no good bundle: rules %v reason %q err %v", c2.Rules, reason, err)
	}
}

// Every kind of rule a bundle may carry has a trial loader.
func TestTrialLoadCoversEveryBundleFolder(t *testing.T) {
	t.Parallel()
	for _, kind := range rulebundle.Folders {
		if _, ok := ruleLoaders[kind]; !ok {
			t.Errorf("bundle folder %s/ has no trial loader", kind)
		}
	}
	if len(ruleLoaders) != len(rulebundle.Folders) {
		t.Errorf("trial loaders %d for %d bundle folders", len(ruleLoaders), len(rulebundle.Folders))
	}
}
