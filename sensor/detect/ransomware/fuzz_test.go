package ransomware

import (
	"bytes"
	"io/fs"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tillwatch/tillwatch/rules"
)

// FuzzLoadRules: rule authors contribute thresholds files; a malformed one
// must be an error, never a panic, and a file that loads must score.
func FuzzLoadRules(f *testing.F) {
	builtin, err := fs.ReadFile(rules.Builtin, "ransomware/thresholds.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(builtin)
	f.Add([]byte("window: 1s\nalert_score: 1\n"))
	f.Add([]byte("spawners: [sh, '']\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := LoadRules(fstest.MapFS{"ransomware/t.yaml": {Data: raw}}, "ransomware")
		if err != nil {
			return
		}
		s := NewScorer(r)
		now := time.Now()
		enc := Extract(bytes.Repeat([]byte{0x8f, 0x13, 0xee, 0x01}, 1024), 4096)
		before := &Features{Magic: "text", Entropy: 4.5, Sampled: SampleSize}
		for i, op := range []string{OpWrite, OpCreate, OpRename, OpDelete, OpOpen} {
			s.Observe(Obs{Time: now, Tree: 1, PID: 2, Op: op, Path: "/d/a.csv", OldPath: "/d/b.csv", Before: before, After: &enc,
				Ancestors: []Spawner{{PID: 3, Name: "sh"}, {PID: 2, Name: "xargs"}}, Canary: i%2 == 0})
		}
		r.IsSpawner("python3.11")
	})
}

// FuzzSample: content sampling reads whatever a file holds.
func FuzzSample(f *testing.F) {
	f.Add([]byte("%PDF-1.7\n"), int64(9))
	f.Add(bytes.Repeat([]byte("a,b\n"), 5000), int64(20000))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		ft := Sample(bytes.NewReader(b).ReadAt, size)
		if ft.Entropy < 0 || ft.Entropy > 8 || ft.Sampled > SampleBlocks*SampleSize {
			t.Fatalf("features %+v", ft)
		}
	})
}
