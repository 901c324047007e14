package config

import (
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/sensor/kernel"
)

// TestRingBoundsMatchKernel: config checks the rings with its own copy of
// the kernel layer's defaults and bounds; they must not drift apart.
func TestRingBoundsMatchKernel(t *testing.T) {
	t.Parallel()
	if DefaultProcRing != kernel.DefaultProcRing || DefaultTamperRing != kernel.DefaultTamperRing ||
		minProcRing != kernel.MinProcRing || minTamperRing != kernel.MinTamperRing || maxRing != kernel.MaxRing {
		t.Errorf("config's ring bounds differ from sensor/kernel's")
	}
}

func TestValidateRings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		proc, tamper int
		bad          string
	}{
		{"defaults", DefaultProcRing, DefaultTamperRing, ""},
		{"larger", 8 << 20, 1 << 20, ""},
		{"proc not a power of two", 3 << 20, DefaultTamperRing, "kernel.proc_ring_bytes: 3145728: want a power of two"},
		{"proc below the wake-up batch", 256 << 10, DefaultTamperRing, "kernel.proc_ring_bytes"},
		{"tamper zero", DefaultProcRing, 0, "kernel.tamper_ring_bytes: 0"},
		{"tamper too large", DefaultProcRing, 512 << 20, "kernel.tamper_ring_bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			c.Collector.Disabled = true
			c.Kernel.ProcRingBytes, c.Kernel.TamperRingBytes = tc.proc, tc.tamper
			err := c.Validate()
			switch {
			case tc.bad == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
				t.Errorf("Validate = %v, want an error with %q", err, tc.bad)
			}
		})
	}
}

func TestValidateAgentIOUring(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value, bad string
	}{
		{AgentIOUringStop, ""},
		{AgentIOUringAllow, ""},
		{"", `kernel.agent_io_uring: "" is not stop or allow`},
		{"kill", `kernel.agent_io_uring: "kill" is not stop or allow`},
	} {
		c := Default()
		c.Collector.Disabled = true
		c.Kernel.AgentIOUring = tc.value
		err := c.Validate()
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%q: Validate: %v", tc.value, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%q: Validate = %v, want an error with %q", tc.value, err, tc.bad)
		}
	}
	if Default().Kernel.AgentIOUring != AgentIOUringStop {
		t.Error("the default is not stop")
	}
}
