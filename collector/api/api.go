// Package api is the collector's wire contract: the request and response
// bodies of /api/v1, shared by the collector's server, the sensor's shipper
// and the CLI. openapi.yaml beside this file documents the same contract and
// a test in collector/server keeps the two true to each other.
package api

import (
	_ "embed"
	"time"

	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// OpenAPI is the API description, served at /api/v1/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Prefix is the path prefix of every versioned route.
const Prefix = "/api/v1"

// Routes.
const (
	PathEnroll    = Prefix + "/enroll"
	PathEvents    = Prefix + "/events"
	PathHeartbeat = Prefix + "/heartbeat"
	PathAlerts    = Prefix + "/alerts"
	PathHosts     = Prefix + "/hosts"
	PathOpenAPI   = Prefix + "/openapi.yaml"
	// Kill-switch: responders issue, list and approve; sensors long-poll
	// for what is addressed to them and acknowledge.
	PathCommands        = Prefix + "/commands"
	PathCommand         = Prefix + "/commands/{id}"
	PathCommandApprove  = Prefix + "/commands/{id}/approve"
	PathCommandsPending = Prefix + "/sensor/commands"
	PathCommandAck      = Prefix + "/sensor/commands/{id}/ack"
	// PathSensorRules serves the signed rule bundle (?have=SERIAL).
	PathSensorRules = Prefix + "/sensor/rules"
	PathHealthz     = "/healthz"
	PathMetrics     = "/metrics"
)

// Roles a token can hold.
const (
	RoleSensor    = "sensor"    // enrolment token: may only enrol
	RoleAgent     = "agent"     // per-sensor credential issued at enrolment
	RoleAnalyst   = "analyst"   // read alerts and hosts
	RoleResponder = "responder" // analyst + kill-switch
)

// Limits the server enforces and clients respect.
const (
	MaxBatchBytes  = 8 << 20 // decoded ingest body
	MaxBatchEvents = 5000
	MaxEventBytes  = 256 << 10
)

// EnrollRequest is POSTed with an enrolment token (role sensor) as bearer.
type EnrollRequest struct {
	HostID       string            `json:"host_id"`
	HostName     string            `json:"host_name"`
	OS           string            `json:"os,omitempty"`
	AgentVersion string            `json:"agent_version"`
	Labels       map[string]string `json:"labels,omitempty"`
	// HostKey is a secret the sensor generated at its first enrolment and
	// keeps in its state dir: the collector binds the host id to it, so
	// another machine holding an enrolment token cannot enrol as this
	// host. Required.
	HostKey string `json:"host_key,omitempty"`
}

// EnrollResponse carries the sensor's own credential; the sensor keeps it in
// its state dir and presents it as bearer token from then on.
type EnrollResponse struct {
	AgentID    string `json:"agent_id"`
	HostID     string `json:"host_id"`
	Credential string `json:"credential"`
	// CredentialExpires is when the credential stops working; the sensor
	// renews it before then. Zero: never.
	CredentialExpires time.Time `json:"credential_expires,omitzero"`
	// CommandKeys are the collector's kill-switch signing keys; a sensor
	// pins them at its first enrolment (see docs/security-model.md).
	CommandKeys []killswitch.PublicKey `json:"command_keys,omitempty"`
}

// IngestResponse answers a batch (NDJSON body, optionally gzip-encoded).
// Accepted counts events newly stored, Duplicates those already stored under
// the same event.id; both are confirmed and may be dropped by the sender.
// Rejected lists events that can never be stored (malformed); resending them
// would not help.
type IngestResponse struct {
	Accepted   int         `json:"accepted"`
	Duplicates int         `json:"duplicates"`
	Rejected   []Rejection `json:"rejected,omitempty"`
}

// Rejection names one event of a batch the collector refused and why.
type Rejection struct {
	Line    int    `json:"line"`
	EventID string `json:"event_id,omitempty"`
	Error   string `json:"error"`
}

// Heartbeat is POSTed periodically by every sensor.
type Heartbeat struct {
	HostID       string            `json:"host_id"`
	HostName     string            `json:"host_name,omitempty"`
	AgentVersion string            `json:"agent_version"`
	Mode         string            `json:"mode,omitempty"`
	Health       map[string]string `json:"health,omitempty"` // component -> ok|degraded|failed
	SentAt       time.Time         `json:"sent_at"`
	// ConfigVersion is the first 12 hex digits of the SHA-256 of the
	// sensor's effective configuration; RulesVersion names its rule set.
	// Both are defined by the sensor (sensor/agent/versions.go); an empty
	// value keeps what the collector last heard.
	ConfigVersion string `json:"config_version,omitempty"`
	RulesVersion  string `json:"rules_version,omitempty"`
}

// HeartbeatResponse tells the sensor the collector's clock and when to come back.
type HeartbeatResponse struct {
	ServerTime      time.Time `json:"server_time"`
	IntervalSeconds int       `json:"interval_seconds"`
	// RulesSerial is the serial of the rule bundle the collector serves
	// (0: none); a sensor running an older one fetches PathSensorRules.
	RulesSerial int64 `json:"rules_serial,omitempty"`
}

// RulesSerialHeader carries the served bundle's serial.
const RulesSerialHeader = "X-Tillwatch-Rules-Serial"

// Host is one enrolled sensor as the collector sees it.
type Host struct {
	HostID       string            `json:"host_id"`
	HostName     string            `json:"host_name"`
	AgentID      string            `json:"agent_id"`
	AgentVersion string            `json:"agent_version"`
	OS           string            `json:"os,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Mode         string            `json:"mode,omitempty"`
	Health       map[string]string `json:"health,omitempty"`
	EnrolledAt   time.Time         `json:"enrolled_at"`
	LastSeen     time.Time         `json:"last_seen"`
	AlertCount   int64             `json:"alert_count"`
	// LastSequence is the highest event.sequence received from the host;
	// EventsLost counts the sequence numbers that never arrived (gaps).
	LastSequence int64 `json:"last_sequence"`
	EventsLost   int64 `json:"events_lost"`
	// ConfigVersion is the first 12 hex digits of the SHA-256 of the
	// sensor's effective configuration, as of its last heartbeat: equal
	// values mean equal configurations.
	ConfigVersion string `json:"config_version,omitempty"`
	// RulesVersion names the rule set the sensor runs:
	// "builtin-<12 hex>" (SHA-256 of the built-in rule archive), followed,
	// when extra rule folders are loaded, by "+<12 hex>" (their content) or
	// "+partial-<12 hex>" when they were too large to hash completely.
	// Defined in sensor/agent/versions.go.
	RulesVersion string `json:"rules_version,omitempty"`
}

// HostsResponse answers GET /api/v1/hosts.
type HostsResponse struct {
	Hosts []Host `json:"hosts"`
}

// AlertsResponse answers GET /api/v1/alerts. Each alert is the ECS document
// exactly as the sensor sent it (plus event.ingested), newest first.
type AlertsResponse struct {
	Alerts []map[string]any `json:"alerts"`
}

// Error is the body of every 4xx/5xx answer.
type Error struct {
	Error string `json:"error"`
}

// IssueRequest is POSTed by a responder to /api/v1/commands.
type IssueRequest struct {
	Action     string             `json:"action"`
	Targets    killswitch.Targets `json:"targets"`
	Params     map[string]string  `json:"params,omitempty"`
	Reason     string             `json:"reason,omitempty"`
	TTLSeconds int                `json:"ttl_seconds,omitempty"` // default 3600, at most 7 days
}

// Command is a kill-switch command as the collector reports it.
type Command struct {
	ID       string            `json:"id"`
	Action   string            `json:"action"`
	Targets  string            `json:"targets"`
	Issuer   string            `json:"issuer"`
	Reason   string            `json:"reason,omitempty"`
	IssuedAt time.Time         `json:"issued_at"`
	NotAfter time.Time         `json:"not_after"`
	State    string            `json:"state"`              // pending-approval | active
	Required int               `json:"required_approvals"` // distinct responder signatures needed; 0: one pinned key
	Signed   killswitch.Signed `json:"signed"`             // payload and signatures so far
}

// CommandHost is one targeted host's state.
type CommandHost struct {
	HostID      string             `json:"host_id"`
	State       string             `json:"state"` // pending | delivered | acked
	DeliveredAt *time.Time         `json:"delivered_at,omitempty"`
	AckedAt     *time.Time         `json:"acked_at,omitempty"`
	Result      *killswitch.Result `json:"result,omitempty"`
}

// CommandStatus answers issue, approve and GET /api/v1/commands/{id}.
type CommandStatus struct {
	Command Command       `json:"command"`
	Hosts   []CommandHost `json:"hosts,omitempty"`
}

// CommandsResponse answers GET /api/v1/commands.
type CommandsResponse struct {
	Commands []Command `json:"commands"`
}

// ApproveRequest carries one responder's signature over the command's
// payload (the CLI fetches the payload, shows it, signs it).
type ApproveRequest struct {
	Signature killswitch.Signature `json:"signature"`
}

// PendingCommandsResponse answers a sensor's long-poll.
type PendingCommandsResponse struct {
	Commands []killswitch.Signed `json:"commands"`
}

// Bounds on a long-poll answer. The collector hands out at most
// MaxPendingCommands per answer (the rest come with the next poll: a
// command is redelivered until acknowledged), so a sensor never reads
// more than MaxPendingResponse: each envelope is at most a 16 KiB payload
// in base64 and 16 signatures, under MaxEnvelope in JSON.
const (
	MaxPendingCommands = 64
	MaxEnvelope        = 32 << 10
	MaxPendingResponse = MaxPendingCommands*MaxEnvelope + 1<<10
)

// Long-poll bounds for GET /api/v1/sensor/commands?wait=SECONDS.
const (
	DefaultCommandWait = 25 * time.Second
	MaxCommandWait     = 60 * time.Second
)
