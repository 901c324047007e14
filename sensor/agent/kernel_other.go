//go:build !linux

package agent

import (
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/config"
	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// wireKernel: the eBPF layer exists on Linux only.
func (s *Sensor) wireKernel(cfg config.Config, _ *process.Source, _ *proctree.Table, _ *rmm.Catalog) error {
	switch cfg.Kernel.Mode {
	case "off":
		return nil
	case "required":
		return cfgfile.Usagef("kernel.mode required: the kernel layer is eBPF on Linux")
	}
	s.pipe.Health().Report("kernel", event.HealthDegraded, "tamper protection missing: no eBPF on this OS")
	return nil
}

// armKernelFiles: no kernel tripwires off Linux.
func (s *Sensor) armKernelFiles(config.Config, []string) (bool, string) {
	return false, "no eBPF on this OS"
}

// standDownKernel: no kernel tripwires off Linux.
func (s *Sensor) standDownKernel(bool) bool { return false }
