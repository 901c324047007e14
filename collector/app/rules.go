package app

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/collector/config"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/rulebundle"
)

// fileRules serves the rule bundle at path, re-read when the file changes
// (an operator drops the next bundle in place; no restart). With keys, a
// bundle not signed by one of them is refused here already; without, the
// sensors are the only check (they always are the authoritative one).
type fileRules struct {
	path string
	keys []killswitch.PublicKey

	mu      sync.Mutex
	modTime time.Time
	size    int64
	serial  int64
	bundle  []byte
}

func (f *fileRules) Current() (int64, []byte, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return 0, nil, fmt.Errorf("rules_bundle: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bundle != nil && fi.ModTime().Equal(f.modTime) && fi.Size() == f.size {
		return f.serial, f.bundle, nil
	}
	if fi.Size() > rulebundle.MaxBundle {
		return 0, nil, fmt.Errorf("rules_bundle %s is %d bytes, at most %d", f.path, fi.Size(), rulebundle.MaxBundle)
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return 0, nil, fmt.Errorf("rules_bundle: %w", err)
	}
	var serial int64
	if len(f.keys) > 0 {
		m, _, err := rulebundle.Open(b, f.keys)
		if err != nil {
			return 0, nil, fmt.Errorf("rules_bundle %s: %w", f.path, err)
		}
		serial = m.Serial
	} else if serial, err = rulebundle.PeekSerial(b); err != nil {
		return 0, nil, fmt.Errorf("rules_bundle %s: %w", f.path, err)
	}
	f.modTime, f.size, f.serial, f.bundle = fi.ModTime(), fi.Size(), serial, b
	return serial, b, nil
}

// newRulesSource returns nil (no bundle served) when none is configured.
func newRulesSource(c config.RulesBundle) (server.RulesSource, error) {
	if c.File == "" {
		return nil, nil
	}
	var keys []killswitch.PublicKey
	for _, p := range c.Keys {
		pub, err := killswitch.LoadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("rules_bundle.keys: %w", err)
		}
		keys = append(keys, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: p})
	}
	f := &fileRules{path: c.File, keys: keys}
	if _, _, err := f.Current(); err != nil {
		return nil, err
	}
	return f, nil
}
