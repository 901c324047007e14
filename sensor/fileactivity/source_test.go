package fileactivity

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/event"
)

// recorder is a Hook and an emit target that keeps everything it sees.
type recorder struct {
	mu     sync.Mutex
	acts   []Activity
	events []event.Event
	deny   string // path whose open is denied
}

func (r *recorder) Handle(a *Activity) Verdict {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := *a
	c.ReadAt = nil
	r.acts = append(r.acts, c)
	return Verdict{Deny: a.Perm && a.Path == r.deny, Emit: a.Path == r.deny}
}

func (r *recorder) emit(ev event.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

// waitEvent waits (bounded) for an event with action on path.
func (r *recorder) waitEvent(t *testing.T, action, path string) event.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		for _, ev := range r.events {
			if ev.Event.Action == action && ev.File != nil && ev.File.Path == path {
				r.mu.Unlock()
				return ev
			}
		}
		r.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var got []string
	for _, ev := range r.events {
		got = append(got, ev.Event.Action+" "+ev.File.Path)
	}
	t.Fatalf("no %s event for %s within 5s; got %v", action, path, got)
	return event.Event{}
}

func start(t *testing.T, backend string, dir string, hook *recorder, mods ...func(*Source)) *Source {
	t.Helper()
	return startWith(t, backend, dir, hook, hook, mods...)
}

// startWith runs a source with h as its hook, recording events in hook.
func startWith(t *testing.T, backend string, dir string, h Hook, hook *recorder, mods ...func(*Source)) *Source {
	t.Helper()
	s, err := New(Config{Backend: backend, Paths: []string{dir}, Self: os.Getpid()}, h, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		m(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, hook.emit) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
	})
	// The marks are in place once a probe file's event arrives.
	probe := filepath.Join(dir, "probe-ready")
	deadline := time.Now().Add(5 * time.Second)
	for {
		sh(t, "echo x > "+probe)
		hook.mu.Lock()
		n := len(hook.events)
		hook.mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// sh runs a fixed shell snippet in a child process (so the acting pid is
// not the test's own, which the source ignores as "self").
func sh(t *testing.T, script string) int {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", script, err, out)
	}
	return cmd.ProcessState.Pid()
}

func requireRoot(t *testing.T) {
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("fanotify needs Linux and root")
	}
}

func TestFanotifyReportsActivityWithTheActingProcess(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	dir := t.TempDir()
	rec := &recorder{}
	start(t, BackendFanotify, dir, rec)

	f := filepath.Join(dir, "Invoice 2024.pdf")
	pid := sh(t, "echo hello > '"+f+"'")
	ev := rec.waitEvent(t, OpCloseWrite, f)
	if ev.Process == nil || ev.Process.PID != int64(pid) {
		t.Errorf("close-write process = %+v, want pid %d", ev.Process, pid)
	}
	if ev.Event.Dataset != event.DatasetFile || !slices.Equal(ev.Event.Category, []string{"file"}) || !slices.Equal(ev.Event.Type, []string{"change"}) || ev.File.Extension != "pdf" || ev.File.Directory != dir {
		t.Errorf("event shape: %+v %+v", ev.Event, ev.File)
	}
	ev = rec.waitEvent(t, OpCreate, f)
	if !slices.Equal(ev.Event.Type, []string{"creation"}) || ev.Process == nil || ev.Process.PID != int64(pid) {
		t.Errorf("create event: %+v %+v", ev.Event, ev.Process)
	}

	g := filepath.Join(dir, "Invoice 2024.pdf.locked")
	sh(t, "mv '"+f+"' '"+g+"'")
	rec.waitEvent(t, OpRename, g)
	rec.mu.Lock()
	var old string
	for _, a := range rec.acts {
		if a.Op == OpRename && a.Path == g {
			old = a.OldPath
		}
	}
	rec.mu.Unlock()
	if old != f {
		t.Errorf("rename old path = %q, want %q", old, f)
	}

	// A directory created and filled at once is watched, and its files seen.
	sub := filepath.Join(dir, "new", "deeper")
	sh(t, "mkdir -p '"+sub+"' && echo a > '"+sub+"/a.txt' && sleep 0.2 && echo b > '"+sub+"/b.txt'")
	rec.waitEvent(t, OpCloseWrite, filepath.Join(sub, "b.txt"))

	sh(t, "rm '"+g+"'")
	ev = rec.waitEvent(t, OpDelete, g)
	if !slices.Equal(ev.Event.Type, []string{"deletion"}) {
		t.Errorf("delete type = %v", ev.Event.Type)
	}
}

func TestFanotifyPermissionDenyHappensBeforeTheOpenReturns(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	dir := t.TempDir()
	guarded := filepath.Join(dir, "000 Accounts.xlsx")
	if err := os.WriteFile(guarded, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{deny: guarded}
	start(t, BackendFanotify, dir, rec)
	out, err := exec.Command("/bin/cat", guarded).CombinedOutput()
	if err == nil {
		t.Fatalf("open of a denied file succeeded: %s", out)
	}
	ev := rec.waitEvent(t, OpOpen, guarded)
	if ev.Process == nil || ev.Process.Name != "cat" {
		t.Errorf("open event process = %+v, want cat", ev.Process)
	}
	// Other files stay readable.
	other := filepath.Join(dir, "other.txt")
	sh(t, "echo ok > '"+other+"' && cat '"+other+"' >/dev/null")
}

func TestFsnotifyFallbackWatchesNewDirectories(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rec := &recorder{}
	start(t, BackendFsnotify, dir, rec)
	sub := filepath.Join(dir, "a", "b")
	sh(t, "mkdir -p '"+sub+"' && echo 1 > '"+sub+"/x.txt'")
	rec.waitEvent(t, OpCreate, filepath.Join(sub, "x.txt"))
	y := filepath.Join(sub, "y.txt")
	sh(t, "sleep 0.1; echo 2 > '"+y+"'; rm '"+y+"'")
	rec.waitEvent(t, OpDelete, y)
}

func TestOnlyWatchedTreesAndNoSymlinkEscape(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	dir, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	start(t, BackendFanotify, dir, rec)
	sh(t, "echo x > '"+outside+"/secret.txt'")
	marker := filepath.Join(dir, "after.txt")
	sh(t, "echo y > '"+marker+"'")
	rec.waitEvent(t, OpCloseWrite, marker)
	rec.requireUnder(t, dir)
}

// requireUnder fails the test for every event reported outside dir.
func (r *recorder) requireUnder(t *testing.T, dir string) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.events {
		if !strings.HasPrefix(ev.File.Path, dir+"/") {
			t.Errorf("event outside the watched tree: %s %s", ev.Event.Action, ev.File.Path)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"unknown backend", Config{Backend: "dtrace", Paths: []string{"/tmp"}}},
		{"no paths", Config{Backend: BackendAuto}},
		{"relative path", Config{Paths: []string{"data"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tc.cfg, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry()); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

// creates counts the create events per path under prefix.
func (r *recorder) creates(prefix string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := map[string]int{}
	for _, ev := range r.events {
		if ev.Event.Action == OpCreate && ev.File != nil && strings.HasPrefix(ev.File.Path, prefix) {
			n[ev.File.Path]++
		}
	}
	return n
}

// TestNewFolderEntriesAreReported fills a folder the moment it is created.
// With the name group on a filesystem mark every create is reported once,
// from the first; with per-directory marks (the fallback) the files made
// before the new folder's mark are reported by the walk that follows it,
// so each is reported at least once.
func TestNewFolderEntriesAreReported(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	const files = 300
	for _, marks := range []string{nameMarksFilesystem, nameMarksDirectory} {
		t.Run(marks, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rec := &recorder{}
			s := start(t, BackendFanotify, dir, rec, func(s *Source) { s.dirMarksOnly = marks == nameMarksDirectory })
			rec.mu.Lock()
			got := s.nameMarks
			rec.mu.Unlock()
			if got != marks {
				t.Skipf("name marks are %q on this kernel and file system, not %q", got, marks)
			}
			sub := filepath.Join(dir, "Z-report", "2024")
			sh(t, fmt.Sprintf(`mkdir -p '%s' && i=0; while [ $i -lt %d ]; do : > '%s'/f$i.csv; i=$((i+1)); done`, sub, files, sub))
			last := filepath.Join(sub, fmt.Sprintf("f%d.csv", files-1))
			rec.waitEvent(t, OpCreate, last)
			time.Sleep(200 * time.Millisecond) // stragglers of the walk
			n := rec.creates(sub + "/")
			if len(n) != files {
				t.Errorf("%d of %d files reported as created", len(n), files)
			}
			if marks == nameMarksFilesystem {
				for p, c := range n {
					if c != 1 {
						t.Errorf("%s reported %d times, want once", p, c)
					}
				}
			}
		})
	}
}

// TestFilesystemMarkFollowsFoldersMovedInAndOut: the filesystem mark
// reports a whole file system; only the watched tree may come out, and a
// folder moved in or out changes sides.
func TestFilesystemMarkFollowsFoldersMovedInAndOut(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	dir, outside := t.TempDir(), t.TempDir()
	rec := &recorder{}
	s := start(t, BackendFanotify, dir, rec)
	rec.mu.Lock()
	marks := s.nameMarks
	rec.mu.Unlock()
	if marks != nameMarksFilesystem {
		t.Skipf("name marks are %q here", marks)
	}
	// Activity outside first, so the outside folder's handle is learnt
	// (and remembered) as outside.
	sh(t, "mkdir '"+outside+"/box' && : > '"+outside+"/box/a.txt' && : > '"+outside+"/b.txt'")
	in := filepath.Join(dir, "box")
	sh(t, "mv '"+outside+"/box' '"+in+"'")
	rec.waitEvent(t, OpRename, in)
	sh(t, ": > '"+in+"/c.txt'")
	rec.waitEvent(t, OpCreate, filepath.Join(in, "c.txt"))
	// Moved out again: its handle must stop resolving to the watched path.
	sh(t, "mv '"+in+"' '"+outside+"/box2' && : > '"+outside+"/box2/d.txt'")
	rec.waitEvent(t, OpDelete, in)
	marker := filepath.Join(dir, "after.txt")
	sh(t, ": > '"+marker+"'")
	rec.waitEvent(t, OpCreate, marker)
	rec.requireUnder(t, dir)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.events {
		if strings.HasSuffix(ev.File.Path, "d.txt") {
			t.Errorf("a create in a folder moved out was reported: %s", ev.File.Path)
		}
	}
}

// TestFoldersGoneBeforeTheyAreWalkedAreNoDegradation: dpkg unpacks a
// folder as DIR.dpkg-new and renames it into place, build tools make and
// remove scratch folders; the source often reaches such a folder after it
// is gone. That is no loss of coverage (the rename's or removal's own event
// follows, and a renamed folder is marked under its new name), so it must
// not be reported as a degradation, and files made in the renamed folder
// are still seen.
func TestFoldersGoneBeforeTheyAreWalkedAreNoDegradation(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, backend := range []string{BackendFanotify, BackendFsnotify} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rec := &recorder{}
			var mu sync.Mutex
			var degraded []string
			start(t, backend, dir, rec, func(s *Source) {
				s.OnHealth(func(component, status, reason string) {
					if status == event.HealthDegraded {
						mu.Lock()
						degraded = append(degraded, reason)
						mu.Unlock()
					}
				})
			})
			sh(t, "cd '"+dir+"' && for i in $(seq 1 200); do mkdir d$i.dpkg-new && mv d$i.dpkg-new d$i && mkdir t$i && rmdir t$i; done")
			last := filepath.Join(dir, "d200", "x.txt")
			sh(t, "echo x > '"+last+"'")
			rec.waitEvent(t, OpCreate, last)
			mu.Lock()
			defer mu.Unlock()
			if len(degraded) > 0 {
				t.Errorf("%d degradations for folders that were renamed or removed, first: %s", len(degraded), degraded[0])
			}
		})
	}
}
