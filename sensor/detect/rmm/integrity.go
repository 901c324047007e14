package rmm

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/pipeline"
	rmmcat "github.com/tillwatch/tillwatch/sensor/rmm"
)

// integrity checks an approved agent's binary against the baseline. pid is
// the process running it (its running image is hashed first), 0 for a file
// on disk.
func (d *Detector) integrity(ev *event.Event, prod *rmmcat.Product, file string, pid int64) *pipeline.Detection {
	if d.o.Baseline == nil {
		return nil
	}
	sum, size, err := d.o.Host.Digest(pid, file)
	if err != nil {
		return nil // unreadable: enrichment says so; nothing to compare
	}
	verdict, prev, err := d.o.Baseline.Check(prod.ID, file, sum, size)
	if err != nil {
		d.o.Health("rmm-baseline", event.HealthDegraded, err.Error())
		d.log.Error("rmm baseline not saved; fix the state dir", logkey.Error, err)
	}
	if verdict != rmmcat.VerdictChanged {
		return nil
	}
	if end, ok := d.windows[prod.ID]; ok && d.o.Now().Before(end) {
		if err := d.o.Baseline.Accept(prod.ID, file, sum, size, "update window"); err != nil {
			d.o.Health("rmm-baseline", event.HealthDegraded, err.Error())
		}
		d.log.Info("approved agent binary changed during its update window; new baseline recorded", logkey.Path, file, "product", prod.ID, "sha256", sum)
		return nil
	}
	if !d.once("integrity:" + file + ":" + sum) {
		return nil
	}
	det := d.simple(BehaviourIntegrity, ev, prod, fmt.Sprintf("%s binary %s changed outside an update: sha256 %s, baseline %s (recorded %s, %s)",
		prod.Name, file, sum, prev.SHA256, prev.Recorded.Format(time.RFC3339), prev.Reason))
	f := &event.File{Path: file, Name: filepath.Base(file), Directory: filepath.Dir(file), Size: size, Hash: &event.Hash{SHA256: sum}}
	det.Alert.File = f
	return &det
}
