package kernel

import (
	"os"
	"testing"
)

func TestConfigValidateRings(t *testing.T) {
	t.Parallel()
	page := os.Getpagesize()
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"set", Config{ProcRing: 4 << 20, TamperRing: 64 << 10}, true},
		{"not a power of two", Config{ProcRing: 3 << 20}, false},
		{"below the wake-up batch", Config{ProcRing: 256 << 10}, false},
		{"tamper below the minimum", Config{TamperRing: page}, false},
		{"too large", Config{ProcRing: 1 << 30}, false},
		{"negative", Config{TamperRing: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate(%+v) = %v, want ok %v", tc.cfg, err, tc.ok)
			}
		})
	}
}
