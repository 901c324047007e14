// Package logkey names the structured-log attribute keys used across
// tillwatch, so that operators can grep and ship logs by stable keys.
package logkey

const (
	Component = "component"
	Stage     = "stage"
	Error     = "err"
	Path      = "path"
	PID       = "pid"
	HostID    = "host_id"
	AgentID   = "agent_id"
	EventID   = "event_id"
	RuleID    = "rule_id"
	URL       = "url"
	Count     = "count"
	Addr      = "addr"
	Backend   = "backend"
	Reason    = "reason"
	Action    = "action"
	Duration  = "duration"
	Command   = "command_id"
	// Ring, Bytes and PinnedBytes: a kernel ring and its sizes.
	Ring        = "ring"
	Bytes       = "bytes"
	PinnedBytes = "pinned_bytes"
	// RSSBefore and RSSAfter: resident memory in bytes around a change.
	RSSBefore = "rss_before"
	RSSAfter  = "rss_after"
)
