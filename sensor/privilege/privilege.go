// Package privilege tells which Linux capabilities the sensor holds, so a
// missing one is reported as one line naming it, not as a later EPERM.
package privilege

import "fmt"

// Capability numbers (linux/capability.h).
const (
	CapDACReadSearch = 2
	CapKill          = 5
	CapNetAdmin      = 12
	CapSysPtrace     = 19
	CapSysAdmin      = 21
)

// Names maps the capabilities the sensor uses to their names.
var Names = map[int]string{
	CapDACReadSearch: "CAP_DAC_READ_SEARCH",
	CapKill:          "CAP_KILL",
	CapNetAdmin:      "CAP_NET_ADMIN",
	CapSysPtrace:     "CAP_SYS_PTRACE",
	CapSysAdmin:      "CAP_SYS_ADMIN",
}

// Set is a set of effective capabilities.
type Set uint64

// Has reports whether cap is in the set.
func (s Set) Has(cap int) bool { return s&(1<<uint(cap)) != 0 }

// Missing returns a one-line error naming the capabilities of need that s
// lacks, or nil.
func (s Set) Missing(need []int, why string) error {
	var miss []string
	for _, c := range need {
		if !s.Has(c) {
			miss = append(miss, Names[c])
		}
	}
	if len(miss) == 0 {
		return nil
	}
	return fmt.Errorf("missing capability %v (%s): run as root or grant it with AmbientCapabilities= in the systemd unit", miss, why)
}
