package execpath

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/tillwatch/tillwatch/rules"
)

// FuzzLoadRules: a rule file from a contributor or an operator's --rules
// folder loads or is refused with an error; it never panics the sensor.
func FuzzLoadRules(f *testing.F) {
	builtin, err := fs.ReadFile(rules.Builtin, "exec/exec-location.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(builtin)
	f.Add([]byte("rules:\n  - id: X\n    match: memory\n    paths: [/]\n"))
	f.Add([]byte("rules: {}\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		rs, err := LoadRules(fstest.MapFS{"exec/f.yaml": {Data: raw}}, "exec")
		if err != nil {
			return
		}
		d := New(rs, nil)
		d.Detect(execEvent("/dev/shm/x"))
	})
}
