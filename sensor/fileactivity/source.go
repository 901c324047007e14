// Package fileactivity is the file-activity source: it reports creations,
// completed writes, deletions and renames under the watched directories,
// with the acting process where the backend knows it.
//
// Two backends, chosen in order when the backend is "auto" (the reason for
// every fallback is logged and reported as a health event):
//
//   - fanotify (Linux, root): two groups on per-directory marks. A content
//     group receives FAN_OPEN_PERM and FAN_CLOSE_WRITE with an fd for the
//     file and the pid of the opener; a FID group (FAN_REPORT_DFID_NAME)
//     receives creations, deletions and renames. Every permission request is
//     shown to the Hook before it is answered (or, for the opens a Prejudger
//     allows at once, after), which is what lets a guard stop an encryptor
//     before its next open for writing returns.
//   - fsnotify (inotify/kqueue/ReadDirectoryChanges): recursive watches with
//     no pid. Degraded: nothing can be stopped synchronously and no process
//     is attributed.
package fileactivity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Backends.
const (
	BackendAuto     = "auto"
	BackendFanotify = "fanotify"
	BackendFsnotify = "fsnotify"
)

// Ops are the event.action values this source emits.
const (
	OpCreate     = "create"
	OpCloseWrite = "close-write"
	OpDelete     = "delete"
	OpRename     = "rename"
	OpOpen       = "open" // only when a Hook asks for it (canaries)
)

// Activity is one observation, as a Hook sees it.
type Activity struct {
	Op      string
	Path    string
	OldPath string // rename: where the file was before, when known
	PID     int    // 0 when the backend does not know (fsnotify)
	Dir     bool   // the object is a directory
	// Perm is set for permission requests (fanotify FAN_OPEN_PERM): the
	// opener is blocked until the Hook returns. Op is OpOpen.
	Perm bool
	// ReadAt reads the file's content through the event's own descriptor
	// (no path lookup, so no symlink is followed and a rename cannot
	// redirect it). Nil when the event carries no descriptor. Valid only
	// during the Hook call.
	ReadAt func(p []byte, off int64) (int, error)
	// Size is the file's size when ReadAt is set.
	Size int64
	// Answered marks a permission request the Prejudger allowed before
	// the Hook saw it: the opener has moved on, and the Hook's Deny is
	// ignored.
	Answered bool
	// Behind marks, for the Prejudger, a permission request queued behind
	// events the Hook has not handled yet (the close-write of the file
	// the same process wrote just before, say). Answering it at once
	// would let its opener run ahead of their judgement.
	Behind bool
}

// Verdict is a Hook's answer.
type Verdict struct {
	// Deny answers a permission request with FAN_DENY (the open fails
	// with EPERM). Ignored for notifications.
	Deny bool
	// Emit marks the activity as worth an event even when the source would
	// not emit it by itself (an "open" of a canary).
	Emit bool
}

// Hook is consulted synchronously for every activity, before a permission
// request is answered (unless its Prejudger allowed it already) and before
// the event is emitted. It must be fast and must not block on anything the watched
// processes can hold: while it runs, every opener in the watched trees
// waits. It is called from more than one goroutine (one per fanotify group).
type Hook interface {
	Handle(a *Activity) Verdict
}

// Prejudger is a Hook that can allow some permission requests at once,
// before the events the kernel queued ahead of them are handled (fanotify
// only). Prejudge returns true for a request that may be allowed without
// waiting: the Hook's Handle still sees it afterwards, with Answered set.
// It is called as the content group is read, while Handle may be running
// on earlier events in another goroutine: it must be fast and must not
// wait for Handle.
type Prejudger interface {
	Prejudge(a *Activity) bool
}

// Config configures the source.
type Config struct {
	Backend string   // auto | fanotify | fsnotify
	Paths   []string // absolute directories; events outside them are not reported
	// ProcRoot is where process names and executables are read ("/proc").
	ProcRoot string
	// Self is the sensor's own pid: its activity is never reported or
	// blocked (it hashes files and restores canaries).
	Self int
	// NoOpenPerm makes the fanotify content group a notification group:
	// no permission event per open (reads included), only completed
	// writes. Set when something else holds an encryptor synchronously
	// (the kernel layer's tripwires); NoOpenPermWhy says what, for the log.
	NoOpenPerm    bool
	NoOpenPermWhy string
}

// Source implements pipeline.Source.
type Source struct {
	cfg     Config
	log     *slog.Logger
	hook    Hook
	health  event.HealthFunc
	procs   *procCache
	events  *prometheus.CounterVec
	lost    *prometheus.CounterVec
	backend string // the backend in use, once running
	// dirMarksOnly makes fanotify mark each directory for name events
	// even where a filesystem mark is allowed (tests of the fallback).
	dirMarksOnly bool
	// nameMarks is how fanotify's name group marks, once running:
	// "filesystem" or "directory".
	nameMarks string
}

// New returns a file-activity source. reg receives its metrics; hook may be
// nil. It validates the configuration but touches nothing yet.
func New(cfg Config, hook Hook, log *slog.Logger, reg prometheus.Registerer) (*Source, error) {
	switch cfg.Backend {
	case "":
		cfg.Backend = BackendAuto
	case BackendAuto, BackendFanotify, BackendFsnotify:
	default:
		return nil, fmt.Errorf("backend %q is not auto, fanotify or fsnotify", cfg.Backend)
	}
	if len(cfg.Paths) == 0 {
		return nil, errors.New("no paths to watch")
	}
	for i, p := range cfg.Paths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("watch path %q is not absolute", p)
		}
		cfg.Paths[i] = filepath.Clean(p)
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	s := &Source{
		cfg: cfg, hook: hook, log: log.With(logkey.Component, "fileactivity"),
		health: event.NoHealth,
		procs:  newProcCache(cfg.ProcRoot, 4096, 2*time.Second),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tillwatch_file_events_total",
			Help: "File activity observed under the watched directories, per backend and action.",
		}, []string{"backend", "action"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tillwatch_file_events_lost_total",
			Help: "File events the kernel dropped (queue overflow) or that could not be watched, per backend and reason.",
		}, []string{"backend", "reason"}),
	}
	reg.MustRegister(s.events, s.lost)
	return s, nil
}

// OnHealth sets where degradations are reported (pipeline.Health.Report).
func (s *Source) OnHealth(f event.HealthFunc) { s.health = f }

// Name implements pipeline.Source.
func (s *Source) Name() string { return "fileactivity" }

// component is the health component name of this source.
const component = "source/fileactivity"

// backend is one way of watching.
type backend interface {
	run(ctx context.Context, emit func(event.Event)) error
	close()
}

// Run implements pipeline.Source: it starts the configured backend (with
// ordered fallback for auto) and blocks until ctx is done.
func (s *Source) Run(ctx context.Context, emit func(event.Event)) error {
	b, name, err := s.open()
	if err != nil {
		return err
	}
	defer b.close()
	s.backend = name
	return b.run(ctx, emit)
}

// open picks the backend. An explicit choice that fails is an error; auto
// falls back from fanotify to fsnotify and says why.
func (s *Source) open() (backend, string, error) {
	if s.cfg.Backend != BackendFsnotify {
		fb, err := newFanotify(s)
		if err == nil {
			return fb, BackendFanotify, nil
		}
		if s.cfg.Backend == BackendFanotify {
			return nil, "", fmt.Errorf("fanotify backend: %w", err)
		}
		reason := fmt.Sprintf("fanotify unavailable (%v); using fsnotify: no acting process, no synchronous stop", err)
		s.log.Warn("file activity backend fallback", logkey.Backend, BackendFsnotify, logkey.Reason, reason)
		s.health(component, event.HealthDegraded, reason)
	}
	nb, err := newFsnotify(s)
	if err != nil {
		return nil, "", fmt.Errorf("fsnotify backend: %w", err)
	}
	return nb, BackendFsnotify, nil
}

// under reports whether p lies in one of the watched trees.
func (s *Source) under(p string) bool {
	for _, root := range s.cfg.Paths {
		if p == root || strings.HasPrefix(p, root+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// handle runs the hook and emits the event for a; it returns the verdict.
func (s *Source) handle(backend string, a *Activity, emit func(event.Event)) (v Verdict) {
	if s.hook != nil {
		v = s.safeHook(a)
	}
	if a.Op == OpOpen && !v.Emit {
		return v
	}
	s.events.WithLabelValues(backend, a.Op).Inc()
	emit(s.toEvent(a))
	return v
}

// safeHook keeps a panicking hook from leaving an opener blocked forever.
func (s *Source) safeHook(a *Activity) (v Verdict) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("file activity hook panicked; request allowed", "panic", fmt.Sprint(r), logkey.Path, a.Path)
			s.health(component, event.HealthDegraded, fmt.Sprintf("hook panicked: %v", r))
			v = Verdict{}
		}
	}()
	return s.hook.Handle(a)
}

// safePrejudge asks the Prejudger; a panic keeps the request for the full
// judgement.
func (s *Source) safePrejudge(p Prejudger, a *Activity) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("file activity prejudge panicked; the request waits for the full judgement", "panic", fmt.Sprint(r), logkey.Path, a.Path)
			s.health(component, event.HealthDegraded, fmt.Sprintf("prejudge panicked: %v", r))
			ok = false
		}
	}()
	return p.Prejudge(a)
}

// toEvent shapes a as a tillwatch.file telemetry event.
func (s *Source) toEvent(a *Activity) event.Event {
	typ := map[string]string{OpCreate: "creation", OpCloseWrite: "change", OpDelete: "deletion", OpRename: "change", OpOpen: "access"}[a.Op]
	ev := event.Event{
		Timestamp: time.Now().UTC(),
		Event: event.Meta{
			Kind: event.KindEvent, ID: event.NewID(), Category: []string{"file"}, Type: []string{typ},
			Action: a.Op, Dataset: event.DatasetFile, Module: "fileactivity",
		},
		File: FileOf(a.Path),
	}
	if a.PID > 0 {
		ev.Process = s.procs.process(a.PID)
	}
	return ev
}

// FileOf returns the ECS file group of path.
func FileOf(path string) *event.File {
	f := &event.File{Path: path, Name: filepath.Base(path), Directory: filepath.Dir(path)}
	if ext := filepath.Ext(f.Name); len(ext) > 1 && ext != f.Name {
		f.Extension = strings.ToLower(ext[1:])
	}
	return f
}
