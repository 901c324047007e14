// Package response acts on detections locally: in enforce mode it stops the
// offending process at once, with or without a collector. Every action
// checks the allow-list and the target first and returns a typed result that
// is written into the alert (tillwatch.response.*), never only logged.
package response

import (
	"context"
	"errors"
	"fmt"
	"github.com/tillwatch/tillwatch/sensor/procclock"
	"log/slog"
	"os"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
)

// Modes.
const (
	ModeMonitor = "monitor"
	ModeEnforce = "enforce"
)

// Errors a caller may branch on.
var (
	ErrProtected    = errors.New("target is protected (pid 1, the sensor itself or its parent)")
	ErrPIDReused    = errors.New("target pid now belongs to another process (start time differs); not touched")
	ErrGone         = errors.New("target process already exited")
	ErrNotAllowed   = errors.New("action not in the local response allow-list")
	ErrNoTarget     = errors.New("no target process")
	ErrOutOfScope   = errors.New("target is outside the response scope (response.only_under); not touched")
	errUnsupported  = errors.ErrUnsupported
	allowedResponse = map[string]bool{event.ActionKill: true, event.ActionSuspend: true}
)

// Processes is the OS seam the responder acts through; the real one signals
// processes, tests may wrap it to observe calls.
type Processes interface {
	// StartTime returns the process's start time, or ErrGone.
	StartTime(pid int) (time.Time, error)
	// Signal sends kill (SIGKILL) or suspend (SIGSTOP) to pid.
	Signal(pid int, action string) error
}

// Responder implements pipeline.Responder.
type Responder struct {
	mode  string
	procs Processes
	log   *slog.Logger
	self  int
	// scope, when not 0, is the only pid (with its descendants) acted on
	// (response.only_under).
	scope int
}

// OnlyUnder confines the responder to pid and its descendants (0: every
// process); targets elsewhere are refused with ErrOutOfScope.
func (r *Responder) OnlyUnder(pid int) { r.scope = pid }

// New returns a responder. procs may be nil for the real OS.
func New(mode string, procs Processes, log *slog.Logger) *Responder {
	if procs == nil {
		procs = osProcesses{}
	}
	return &Responder{mode: mode, procs: procs, log: log.With(logkey.Component, "response"), self: os.Getpid()}
}

// Respond implements pipeline.Responder.
func (r *Responder) Respond(_ context.Context, d *pipeline.Detection) {
	if d.Response == "" || d.Response == event.ActionNone {
		return
	}
	tw := d.Alert.Tillwatch
	if tw == nil {
		tw = &event.Tillwatch{}
		d.Alert.Tillwatch = tw
	}
	if r.mode != ModeEnforce {
		tw.Response = &event.Response{Action: event.ActionNone, Result: ResultMonitorOnly(d.Response)}
		return
	}
	res := &event.Response{Action: d.Response, Result: event.ResultOK}
	if d.Target != nil {
		res.Target = fmt.Sprintf("pid:%d", d.Target.PID)
	}
	if err := r.act(d.Response, d.Target); err != nil {
		res.Result = err.Error()
	}
	tw.Response = res
	r.log.Warn("local response", logkey.Action, res.Action, "target", res.Target, "result", res.Result, logkey.EventID, d.Alert.Event.ID)
}

// ResultMonitorOnly is the result recorded when monitor mode held back an action.
func ResultMonitorOnly(action string) string {
	return "monitor mode: would " + action
}

// act performs one allow-listed action on target, refusing protected and
// reused pids.
func (r *Responder) act(action string, t *pipeline.Target) error {
	if !allowedResponse[action] {
		return fmt.Errorf("%w: %s", ErrNotAllowed, action)
	}
	if t == nil || t.PID <= 0 {
		return ErrNoTarget
	}
	if t.PID == 1 || t.PID == r.self || t.PID == os.Getppid() {
		return ErrProtected
	}
	if r.scope > 0 && !Descends("/proc", t.PID, r.scope) {
		return ErrOutOfScope
	}
	if t.Start != 0 {
		st, err := r.procs.StartTime(t.PID)
		if err != nil {
			return err
		}
		if !procclock.SameStart(st, time.UnixMilli(t.Start)) {
			return ErrPIDReused
		}
	}
	if t.Tree {
		return r.actTree(action, t.PID)
	}
	return r.procs.Signal(t.PID, action)
}

// actTree suspends the whole tree first, so no worker can fork or write
// while the decision is made, then kills it when the action is kill.
func (r *Responder) actTree(action string, pid int) error {
	tree := NewTree("/proc", r.self, os.Getppid())
	pids, err := tree.Stop(pid)
	if err != nil {
		return fmt.Errorf("suspend tree of pid %d: %w", pid, err)
	}
	if action == event.ActionKill {
		if err := tree.Kill(pids); err != nil {
			return fmt.Errorf("kill tree of pid %d: %w", pid, err)
		}
	}
	return nil
}
