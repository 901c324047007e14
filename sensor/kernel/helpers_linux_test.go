package kernel

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// newTestLayer loads the layer with a pin dir of its own under /sys/fs/bpf
// and removes every pin when the test ends. Tests are scoped to what they
// start: only their own stand-in agent is tainted, only their own pids
// protected, only their own decoy names armed.
func newTestLayer(t *testing.T, cfg Config) *Layer {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the kernel layer needs root")
	}
	if cfg.PinDir == "" {
		cfg.PinDir = testPinDir(t)
	}
	t.Cleanup(func() { Release(cfg.PinDir) }) // also when Load fails half-way
	l, err := Load(cfg)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Unpin(); err != nil {
			t.Errorf("Unpin: %v", err)
		}
		if _, err := os.Stat(cfg.PinDir); !os.IsNotExist(err) {
			t.Errorf("pin dir %s still there after Unpin: %v", cfg.PinDir, err)
		}
	})
	return l
}

func testPinDir(t *testing.T) string {
	return filepath.Join("/sys/fs/bpf", "tillwatch-test-"+unique(t))
}

func unique(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
