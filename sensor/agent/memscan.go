package agent

import (
	"context"

	"github.com/tillwatch/tillwatch/internal/event"
	yaradetect "github.com/tillwatch/tillwatch/sensor/detect/yara"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
)

// scanMemoryAfterResponse wraps the responder: when another detector raised
// an alert about a process that is still running after the response (the
// rule only reports, or the sensor is in monitor mode), YARA scans that
// process's memory — a payload unpacked in memory shows there, not on disk.
// Its matches come back as YARA alerts. A killed process is not scanned.
type scanMemoryAfterResponse struct {
	next pipeline.Responder
	yd   *yaradetect.Detector
}

// Respond implements pipeline.Responder.
func (s scanMemoryAfterResponse) Respond(ctx context.Context, d *pipeline.Detection) {
	if s.next != nil {
		s.next.Respond(ctx, d)
	}
	a := &d.Alert
	if a.Process == nil || a.Process.PID <= 0 || a.Rule == nil || a.Rule.Ruleset == event.RulesetYARA {
		return
	}
	if tw := a.Tillwatch; tw != nil && tw.Response != nil && tw.Response.Action != event.ActionNone {
		return // stopped or being stopped: nothing left to read
	}
	p := *a.Process
	s.yd.ScanProcess(int(p.PID), &p, "memory scan asked for by "+a.Rule.ID)
}
