package fileguard

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/canary"
	"github.com/tillwatch/tillwatch/sensor/detect/ransomware"
	"github.com/tillwatch/tillwatch/sensor/fileactivity"
)

// TestPrejudgeAllowsOnlyOpensThatCannotDestroyContent: what the guard lets
// fanotify answer before the events queued ahead are scored. The intent
// cases (an opener blocked in open(2) for reading or for writing) are run
// end to end by the encryptor and decoy tests of this package, whose
// in-place writers open for writing and are still stopped at their open.
func TestPrejudgeAllowsOnlyOpensThatCannotDestroyContent(t *testing.T) {
	t.Parallel()
	r, err := ransomware.LoadRules(rules.Builtin, "ransomware")
	if err != nil {
		t.Fatal(err)
	}
	dir, state := t.TempDir(), t.TempDir()
	set, err := canary.Plant(state, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	decoy := set.Paths()[0]
	g := New(Options{Rules: r, Self: os.Getpid(), ProcRoot: "/proc", Canaries: set, Log: slog.New(slog.DiscardHandler)})
	const stopped, suspect = 4242, 4343
	g.stopped[stopped] = time.Now()
	g.suspects[suspect] = time.Now()
	g.suspects[os.Getppid()] = time.Now() // this test's parent: its children are one-file workers of a suspicious tree
	read := func(p []byte, off int64) (int, error) { return 0, nil }
	for _, tc := range []struct {
		name string
		a    fileactivity.Activity
		want bool
	}{
		{"empty file", fileactivity.Activity{Op: fileactivity.OpOpen, PID: 1234, Path: dir + "/new.csv", ReadAt: read, Size: 0}, true},
		{"no descriptor", fileactivity.Activity{Op: fileactivity.OpOpen, PID: 1234, Path: dir + "/x.csv"}, true},
		// Behind unhandled events: an extraction's create goes at once;
		// a suspicious tree's (a write-new-then-delete encryptor's next
		// copy, while its last is still being scored) waits, and so does
		// a new process whose parent's tree is suspicious (one-file
		// workers).
		{"empty file behind unhandled events", fileactivity.Activity{Op: fileactivity.OpOpen, PID: 1234, Path: dir + "/new.csv", ReadAt: read, Size: 0, Behind: true}, true},
		{"empty file behind, opener suspect", fileactivity.Activity{Op: fileactivity.OpOpen, PID: suspect, Path: dir + "/new.csv", ReadAt: read, Size: 0, Behind: true}, false},
		{"no descriptor behind, opener suspect", fileactivity.Activity{Op: fileactivity.OpOpen, PID: suspect, Path: dir + "/x.csv", Behind: true}, false},
		{"empty file behind, parent suspect", fileactivity.Activity{Op: fileactivity.OpOpen, PID: os.Getpid(), Path: dir + "/new.csv", ReadAt: read, Size: 0, Behind: true}, false},
		{"empty file, opener suspect, nothing ahead", fileactivity.Activity{Op: fileactivity.OpOpen, PID: suspect, Path: dir + "/new.csv", ReadAt: read, Size: 0}, true},
		{"decoy, even empty", fileactivity.Activity{Op: fileactivity.OpOpen, PID: 1234, Path: decoy, ReadAt: read, Size: 0}, false},
		{"process the guard stopped", fileactivity.Activity{Op: fileactivity.OpOpen, PID: stopped, Path: dir + "/new.csv", ReadAt: read, Size: 0}, false},
		{"no process", fileactivity.Activity{Op: fileactivity.OpOpen, PID: 0, Path: dir + "/new.csv", ReadAt: read, Size: 0}, false},
		{"not an open", fileactivity.Activity{Op: fileactivity.OpCloseWrite, PID: 1234, Path: dir + "/x.csv", ReadAt: read, Size: 10}, false},
		// A pid that is in no open(2) (this test's own main thread is
		// not): its intent is unknown, so the open waits.
		{"content, intent unknown", fileactivity.Activity{Op: fileactivity.OpOpen, PID: os.Getpid(), Path: dir + "/x.csv", ReadAt: read, Size: 10}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.a
			if got := g.Prejudge(&a); got != tc.want {
				t.Errorf("Prejudge = %v, want %v", got, tc.want)
			}
		})
	}
}
