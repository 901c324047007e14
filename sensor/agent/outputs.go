package agent

import (
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/shipper"
	"github.com/tillwatch/tillwatch/sensor/sink/ndjson"
	"github.com/tillwatch/tillwatch/sensor/spool"
	"github.com/tillwatch/tillwatch/sensor/uplink"
)

// wireOutputs adds where alerts go: the NDJSON file of --alerts-out and,
// with a collector, the spool as the pipeline's journal feeding the
// shipper: an alert is on disk before any other sink (or the collector)
// sees it.
func (s *Sensor) wireOutputs(cfg config.Config) error {
	log := s.log
	if cfg.AlertsOut != "" {
		out, err := ndjson.Open(cfg.AlertsOut)
		if err != nil {
			return cfgfile.Usagef("alerts_out: %v", err)
		}
		s.pipe.AddSink(out, event.KindAlert)
	}
	if s.uplink != nil {
		sp, err := spool.Open(spool.Options{Dir: cfg.SpoolDir, MaxBytes: cfg.Collector.SpoolBytes, Health: s.pipe.Health().Report, Log: log})
		if err != nil {
			return cfgfile.Usagef("spool_dir: %v", err)
		}
		s.spool = sp
		s.shipper = shipper.New(shipper.Options{
			Queue: sp, Sender: s.uplink, Permanent: uplink.Permanent,
			BatchEvents: cfg.Collector.BatchEvents, FlushInterval: cfg.Collector.FlushInterval,
			Health: s.pipe.Health().Report, Log: log, Registerer: s.reg,
		})
		// The spool is the journal: an alert is on disk before any other
		// sink (or the collector) sees it.
		s.pipe.SetJournal(s.shipper)
	}
	return nil
}
