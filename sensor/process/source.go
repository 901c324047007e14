package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// UnknownName is process.name when the process was gone before its details
// could be read. ECS requires a name; an empty one would fail validation and
// drop an event that still says a process ran.
const UnknownName = "<unknown>"

// Event fields the source sets.
const (
	ActionExec = "exec" // event.action of a process start
	ActionExit = "exit" // event.action of a process end
	// TagResync marks start and end events found by a rescan after events
	// were lost, rather than reported by the kernel as they happened; their
	// timestamps are the rescan time.
	TagResync = "resync"
)

// Stats are the source's counters since New. All only grow.
type Stats struct {
	// Events is how many events were emitted.
	Events uint64
	// Overflows is how many times the kernel reported dropping events
	// because the receive buffer was full; the loss is repaired by a rescan
	// of procfs (at most one a second) once the buffer has drained.
	Overflows uint64
	// EnrichFailures is how many processes had exited before their details
	// could be read at exec: their start events lack the executable and
	// command line, and carry UnknownName if even the name was gone.
	EnrichFailures uint64
}

// Source is the process source. Create it with New, optionally set OnHealth,
// then call Run once; Stats, Backend and the table may be read concurrently
// while it runs.
type Source struct {
	cfg   Config
	table *proctree.Table
	log   *slog.Logger
	users *userCache
	// dial opens the proc connector; a seam so tests can make it fail.
	dial func() (*nlConn, error)
	// kernel, when set, is the first choice of backend auto (kernel.go).
	kernel KernelFeed

	health  event.HealthFunc
	started atomic.Bool
	backend atomic.Pointer[string]

	events, overflows, enrichFailures atomic.Uint64

	// healthMu orders callbacks so a quick degraded/ok pair is not reordered.
	healthMu sync.Mutex
}

// New returns a source that records processes in table and logs to log. A nil
// table gets a private default one (then no detector sees it); a nil log
// discards. cfg should have passed Validate; zero fields take defaults.
func New(cfg Config, table *proctree.Table, log *slog.Logger) *Source {
	if table == nil {
		table = proctree.New(proctree.Options{})
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{
		cfg:   cfg.withDefaults(),
		table: table,
		log:   log.With(slog.String(logkey.Component, "process")),
		users: newUserCache(),
		dial:  func() (*nlConn, error) { return openNetlink(rcvBufSize) },
	}
}

// Name returns "process", the source's name in logs, health and metrics.
func (s *Source) Name() string { return "process" }

// OnHealth sets the health callback; call it before Run. See event.HealthFunc for
// when it is called: falling back to polling (degraded), an overflow
// (degraded) and the resync after it (ok), and Run failing (failed).
func (s *Source) OnHealth(fn event.HealthFunc) { s.health = fn }

// Backend returns the backend in use (BackendNetlink or BackendPoll), or ""
// until Run has subscribed and loaded the running processes into the table.
// Events for processes started after Backend turns non-empty are reported.
func (s *Source) Backend() string {
	if b := s.backend.Load(); b != nil {
		return *b
	}
	return ""
}

// Stats returns a snapshot of the counters.
func (s *Source) Stats() Stats {
	return Stats{Events: s.events.Load(), Overflows: s.overflows.Load(), EnrichFailures: s.enrichFailures.Load()}
}

// Run loads the running processes into the table (without events for them),
// then reports every process start and end through emit until ctx is done.
//
// emit is called from Run's goroutine only, never concurrently, and must
// return quickly: while it blocks, the kernel queues events and drops them
// once the receive buffer is full. Run returns nil when ctx is cancelled,
// promptly and with its socket closed, and an error if the chosen backend
// cannot run (with auto, only if polling cannot run either). Run may be
// called once.
func (s *Source) Run(ctx context.Context, emit func(event.Event)) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("process: Run called twice")
	}
	err := s.run(ctx, emit)
	if err != nil && ctx.Err() == nil {
		s.reportHealth(event.HealthFailed, err.Error())
		return err
	}
	return nil
}

func (s *Source) run(ctx context.Context, emit func(event.Event)) error {
	switch s.cfg.Backend {
	case BackendPoll:
		return s.runPoll(ctx, emit)
	case BackendNetlink:
		c, err := s.dial()
		if err != nil {
			return fmt.Errorf("process: netlink backend: %w (set process.backend to auto or poll to fall back to polling)", err)
		}
		return s.runNetlink(ctx, c, emit)
	default:
		if s.kernel != nil {
			return s.runKernel(ctx, emit)
		}
		c, err := s.dial()
		if err == nil {
			return s.runNetlink(ctx, c, emit)
		}
		reason := fmt.Sprintf("netlink proc connector unavailable (%v); polling every %s, processes shorter than that are missed", err, s.cfg.PollInterval)
		s.log.Warn("falling back to polling for process events; run as root in the host namespaces for real-time events",
			slog.String(logkey.Backend, BackendPoll), slog.String(logkey.Reason, err.Error()))
		s.reportHealth(event.HealthDegraded, reason)
		return s.runPoll(ctx, emit)
	}
}

func (s *Source) setBackend(b string) {
	s.backend.Store(&b)
	s.log.Info("process source running", slog.String(logkey.Backend, b))
}

func (s *Source) reportHealth(state, reason string) {
	if s.health == nil {
		return
	}
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	s.health(s.Name(), state, reason)
}

// emitProc builds and emits the start (ActionExec) or end (ActionExit)
// event of the table entry p.
func (s *Source) emitProc(emit func(event.Event), action string, p proctree.Proc, at time.Time, tags ...string) {
	ev := newEvent(at, action, TableECS(s.table, p))
	if len(tags) > 0 {
		ev.Tags = tags
	}
	s.events.Add(1)
	emit(ev)
}

// newEvent wraps an ECS process in a telemetry event.
func newEvent(at time.Time, action string, p *event.Process) event.Event {
	typ := "start"
	if action == ActionExit {
		typ = "end"
	}
	return event.Event{
		Timestamp: at,
		ECS:       event.ECS{Version: event.ECSVersion},
		Event: event.Meta{
			Kind:     event.KindEvent,
			ID:       event.NewID(),
			Category: []string{"process"},
			Type:     []string{typ},
			Action:   action,
			Dataset:  event.DatasetProcess,
		},
		Process: p,
	}
}

// TableECS builds the ECS process group of p, a process of t, with its
// parent from t as process.parent: the one conversion from the table for
// events about a process (the source's own, the kernel watch's).
func TableECS(t *proctree.Table, p proctree.Proc) *event.Process {
	var parent *proctree.Proc
	if anc := t.Ancestry(p.PID, 1); len(anc) == 1 {
		parent = &anc[0]
	}
	return ToECS(p, parent)
}

// ToECS builds the ECS process group of p, with parent as process.parent.
// If parent is nil but p has a PPID, process.parent carries only the pid.
// An exited p gets End (and ExitCode when known). The result shares nothing
// with p, so callers may modify it. Detectors use it to build alerts.
func ToECS(p proctree.Proc, parent *proctree.Proc) *event.Process {
	ep := &event.Process{
		PID:              int64(p.PID),
		Name:             orUnknown(p.Name),
		Executable:       p.Executable,
		CommandLine:      p.CommandLine,
		Args:             slices.Clone(p.Args),
		WorkingDirectory: p.Cwd,
		Start:            timePtr(p.Start),
	}
	if p.Exited {
		ep.End = timePtr(p.End)
		if ep.End == nil {
			// End is what marks an end event; never lose it to a zero time.
			ep.End = timePtr(time.Now())
		}
		if p.ExitCode >= 0 {
			c := int64(p.ExitCode)
			ep.ExitCode = &c
		}
	}
	if p.UID >= 0 || p.User != "" {
		ep.User = &event.User{Name: p.User}
		if p.UID >= 0 {
			ep.User.ID = strconv.Itoa(p.UID)
		}
	}
	switch {
	case parent != nil:
		ep.Parent = &event.ParentProcess{
			PID:         int64(parent.PID),
			Name:        orUnknown(parent.Name),
			Executable:  parent.Executable,
			CommandLine: parent.CommandLine,
			Args:        slices.Clone(parent.Args),
			Start:       timePtr(parent.Start),
		}
	case p.PPID > 0:
		ep.Parent = &event.ParentProcess{PID: int64(p.PPID)}
	}
	return ep
}

func orUnknown(name string) string {
	if name == "" {
		return UnknownName
	}
	return name
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
