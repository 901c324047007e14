// Package memtrim gives back the memory the sensor only needed to start:
// the pages of its own executable that start-up touched (package
// initialisation, configuration, rule compilation, the first scans) and the
// heap start-up left free. An idle sensor touches a few megabytes of its
// code and read-only data; start-up touches most of the binary, and those
// pages stay mapped, and counted in its resident set, for the life of the
// process unless given back.
package memtrim

// Stats is what a Trim released.
type Stats struct {
	// RSSBefore and RSSAfter are the process's resident set (VmRSS) in
	// bytes around the trim.
	RSSBefore, RSSAfter int64
	// Mapped is the size of the executable's read-only mappings advised.
	Mapped int64
}
