package config

import (
	"testing"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

// FuzzDecode: any bytes given as a config file give a config or an error,
// never a panic, and Validate never panics on what decoding produced.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("mode: enforce\ncollector:\n  url: https://c:8443\n  heartbeat_interval: 30s\n"))
	f.Add([]byte("watch: [/tmp]\nlabels: {a: b}\nprocess: {backend: poll, poll_interval: 1ms}\n"))
	f.Add([]byte("mode: [\n"))
	f.Add([]byte("&a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c := Default()
		if err := cfgfile.Decode("fuzz.yaml", raw, &c); err != nil {
			return
		}
		_ = c.Validate()
	})
}
