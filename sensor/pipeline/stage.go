// Package pipeline runs the sensor: sources turn the OS into events,
// detectors turn events into detections, the responder acts on detections,
// and sinks take alerts, health reports and (optionally) telemetry away.
//
//	sources --emit--> bus --fan-out--> detector goroutines --> alert loop (enrich, respond) --> sink goroutines
//	                     \---------------------------- telemetry / health ------------------------------^
//
// Every source, detector and sink runs in its own goroutine behind recover,
// with success and failure counters, so one broken plugin degrades the sensor
// visibly (a health event) instead of stopping it.
package pipeline

import (
	"context"

	"github.com/tillwatch/tillwatch/internal/event"
)

// Source turns the operating system into events.
//
// Run blocks until ctx is cancelled (then it returns nil) or the source can
// no longer work (then it returns the reason; the pipeline reports the source
// failed and restarts it with backoff). Run may call emit from any goroutine;
// emit is safe for concurrent use and never blocks: when the pipeline is
// saturated it drops telemetry, counts the drop and raises a health event.
// The source owns and closes whatever OS handles it opens.
type Source interface {
	Name() string
	Run(ctx context.Context, emit func(event.Event)) error
}

// Detector reads events and reports detections.
//
// Detect is called from one goroutine per detector, in event order, so a
// detector needs no locks for its own state. It must be fast and avoid I/O:
// it sits on the hot path of every event. The event must not be modified or
// retained. A panic is recovered and counted; the detector keeps running.
type Detector interface {
	Name() string
	Detect(ev *event.Event) []Detection
}

// Detection is an alert plus what the detector proposes the sensor do about
// it when it runs in enforce mode.
type Detection struct {
	// Alert is the ECS alert. The pipeline stamps host, agent, ecs.version
	// and a missing event.id or @timestamp.
	Alert event.Event
	// Response is the proposed tillwatch.response.action ("" = none). The
	// responder decides; in monitor mode it never acts.
	Response string
	// Target identifies what to act on: the process of Alert.Process with
	// its start time, so a reused pid is never hit.
	Target *Target
}

// Target is the process a response acts on.
type Target struct {
	PID   int
	Start int64 // process start, Unix milliseconds; 0 if unknown
	// Tree extends the action to every descendant of PID (workers forked
	// by an encryptor, the payload a shell started).
	Tree bool
}

// Enricher completes an alert with what is too costly for detectors to
// compute on the hot path (file hashes, the full process ancestry). It is
// called from the single alert goroutine, only for alerts.
type Enricher interface {
	Enrich(alert *event.Event)
}

// Responder acts on detections. Respond is called from the single alert
// goroutine, in order, after enrichment; it records what it did in
// d.Alert.Tillwatch.Response and must return promptly (a bounded action).
type Responder interface {
	Respond(ctx context.Context, d *Detection)
}

// Sink takes events out of the sensor: a local file, the collector shipper.
//
// Write is called from the sink's own goroutine, one event at a time; an
// error is counted and reported as a health event, and the pipeline moves on
// (a sink that must not lose data keeps its own queue, like the shipper).
// Close is called once after the last Write, to flush and release.
type Sink interface {
	Name() string
	Write(ctx context.Context, ev *event.Event) error
	Close() error
}
