package check

import (
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/sensor/config"
)

func feature(t *testing.T, r Report, name string) Feature {
	t.Helper()
	for _, f := range r.Features {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no feature %q in %+v", name, r.Features)
	return Feature{}
}

// TestCheckSaysWhatTheKernelOffers runs the real probes: as root on Linux
// fanotify, its permission and name events, the watched folder's mark mode
// and nftables must be reported available, and nothing may be left behind.
func TestCheckSaysWhatTheKernelOffers(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("the probes need Linux and root")
	}
	cfg := config.Default()
	cfg.Watch = []string{t.TempDir()}
	cfg.Collector.Disabled = true
	r := Run(cfg, true, slog.New(slog.DiscardHandler))
	fa := feature(t, r, "fanotify")
	if !fa.Available || !strings.Contains(fa.Detail, "permission events yes") || !strings.Contains(fa.Detail, cfg.Watch[0]+": name events") {
		t.Errorf("fanotify: %+v", fa)
	}
	if nft := feature(t, r, "nftables"); !nft.Available {
		t.Errorf("nftables: %+v", nft)
	}
	var b strings.Builder
	r.Print(&b)
	if !strings.Contains(b.String(), "result: the sensor can run") {
		t.Errorf("report:\n%s", b.String())
	}
}

// TestCheckWithoutConfig: the default config has no collector and would not
// validate; a check without a config must not judge it, only probe.
func TestCheckWithoutConfig(t *testing.T) {
	t.Parallel()
	r := Run(config.Default(), false, slog.New(slog.DiscardHandler))
	if r.ConfigChecked || r.CanRun || r.Blocker != "" {
		t.Errorf("unchecked config judged: checked %v can run %v blocker %q", r.ConfigChecked, r.CanRun, r.Blocker)
	}
	feature(t, r, "fanotify")
	feature(t, r, "yara")
	var b strings.Builder
	r.Print(&b)
	if out := b.String(); !strings.Contains(out, "no config given") || strings.Contains(out, "result:") {
		t.Errorf("report:\n%s", out)
	}
	checked := Run(config.Default(), true, slog.New(slog.DiscardHandler))
	if checked.CanRun || !strings.Contains(checked.Blocker, "collector.url") {
		t.Errorf("checked default config: can run %v blocker %q", checked.CanRun, checked.Blocker)
	}
}
