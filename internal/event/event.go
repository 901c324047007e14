// Package event is tillwatch's data model: every alert, telemetry record and
// health report the sensor produces is an Event, encoded as one Elastic Common
// Schema (ECS 8.x) JSON object. Field names are ECS names; anything specific to
// tillwatch lives under the "tillwatch" object. The collector stores the JSON
// as received, so adding a field here needs no collector change.
package event

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// ECSVersion is the ECS release the field names and types are checked against.
const ECSVersion = "8.17.0"

// AgentType is agent.type on everything the sensor emits.
const AgentType = "tillwatch-sensor"

// Kinds (event.kind).
const (
	KindAlert = "alert" // a detection; carries rule.* and threat.*
	KindEvent = "event" // telemetry: a process started or ended, a file changed
	KindState = "state" // the sensor's own health
)

// Rulesets (rule.ruleset), the closed set of docs/reference.md.
const (
	RulesetRMM        = "rmm"
	RulesetRansomware = "ransomware"
	RulesetYARA       = "yara"
	RulesetSigma      = "sigma"
	RulesetIntegrity  = "integrity"
	RulesetKillswitch = "killswitch"
)

// Rulesets lists every valid rule.ruleset value.
var Rulesets = []string{RulesetRMM, RulesetRansomware, RulesetYARA, RulesetSigma, RulesetIntegrity, RulesetKillswitch}

// Datasets (event.dataset); they name the collector's data streams.
const (
	DatasetAlerts  = "tillwatch.alerts"
	DatasetProcess = "tillwatch.process"
	DatasetFile    = "tillwatch.file"
	DatasetHealth  = "tillwatch.health"
	DatasetAudit   = "tillwatch.audit"
)

// Event is one ECS document. Optional groups are pointers so that an event
// without a process carries no empty "process" object.
type Event struct {
	Timestamp time.Time         `json:"@timestamp"`
	Message   string            `json:"message,omitempty"`
	Tags      []string          `json:"tags,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	ECS       ECS               `json:"ecs"`
	Event     Meta              `json:"event"`
	Agent     Agent             `json:"agent"`
	Host      Host              `json:"host"`
	Rule      *Rule             `json:"rule,omitempty"`
	Threat    *Threat           `json:"threat,omitempty"`
	Process   *Process          `json:"process,omitempty"`
	File      *File             `json:"file,omitempty"`
	User      *User             `json:"user,omitempty"`
	Error     *Error            `json:"error,omitempty"`
	Tillwatch *Tillwatch        `json:"tillwatch,omitempty"`
}

// ECS names the schema version (ecs.version).
type ECS struct {
	Version string `json:"version"`
}

// Meta is the ECS "event" group.
type Meta struct {
	Kind      string     `json:"kind"`
	ID        string     `json:"id"`
	Category  []string   `json:"category,omitempty"`
	Type      []string   `json:"type,omitempty"`
	Action    string     `json:"action,omitempty"`
	Outcome   string     `json:"outcome,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	Severity  int        `json:"severity,omitempty"`
	RiskScore float64    `json:"risk_score,omitempty"`
	Dataset   string     `json:"dataset,omitempty"`
	Module    string     `json:"module,omitempty"`
	Sequence  int64      `json:"sequence,omitempty"`
	Created   *time.Time `json:"created,omitempty"`
	Ingested  *time.Time `json:"ingested,omitempty"`
}

// Agent identifies the sensor that produced the event.
type Agent struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Version string `json:"version"`
	Name    string `json:"name,omitempty"`
}

// Host identifies the machine the event happened on.
type Host struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Hostname     string   `json:"hostname,omitempty"`
	Architecture string   `json:"architecture,omitempty"`
	IP           []string `json:"ip,omitempty"`
	OS           *OS      `json:"os,omitempty"`
}

// OS is host.os.
type OS struct {
	Type     string `json:"type,omitempty"`
	Family   string `json:"family,omitempty"`
	Name     string `json:"name,omitempty"`
	Platform string `json:"platform,omitempty"`
	Version  string `json:"version,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
}

// Rule is the detection rule that produced an alert.
type Rule struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Ruleset     string   `json:"ruleset"`
	Description string   `json:"description,omitempty"`
	Reference   string   `json:"reference,omitempty"`
	Author      []string `json:"author,omitempty"`
	Version     string   `json:"version,omitempty"`
	Category    string   `json:"category,omitempty"`
}

// Threat maps an alert to MITRE ATT&CK. ECS keeps technique and tactic
// fields as parallel arrays.
type Threat struct {
	Framework string    `json:"framework"`
	Technique Technique `json:"technique"`
	Tactic    *Tactic   `json:"tactic,omitempty"`
}

// Technique is threat.technique.
type Technique struct {
	ID        []string `json:"id,omitempty"`
	Name      []string `json:"name,omitempty"`
	Reference []string `json:"reference,omitempty"`
}

// Tactic is threat.tactic.
type Tactic struct {
	ID   []string `json:"id,omitempty"`
	Name []string `json:"name,omitempty"`
}

// Hash holds file or executable digests.
type Hash struct {
	SHA256 string `json:"sha256,omitempty"`
}

// Process is the ECS process group.
type Process struct {
	PID              int64          `json:"pid"`
	EntityID         string         `json:"entity_id,omitempty"`
	Name             string         `json:"name,omitempty"`
	Executable       string         `json:"executable,omitempty"`
	CommandLine      string         `json:"command_line,omitempty"`
	Args             []string       `json:"args,omitempty"`
	WorkingDirectory string         `json:"working_directory,omitempty"`
	Start            *time.Time     `json:"start,omitempty"`
	End              *time.Time     `json:"end,omitempty"`
	ExitCode         *int64         `json:"exit_code,omitempty"`
	Hash             *Hash          `json:"hash,omitempty"`
	User             *User          `json:"user,omitempty"`
	Parent           *ParentProcess `json:"parent,omitempty"`
}

// ParentProcess is process.parent: the same fields one level up, without
// a further parent (the full chain is tillwatch.process.ancestry).
type ParentProcess struct {
	PID         int64      `json:"pid"`
	EntityID    string     `json:"entity_id,omitempty"`
	Name        string     `json:"name,omitempty"`
	Executable  string     `json:"executable,omitempty"`
	CommandLine string     `json:"command_line,omitempty"`
	Args        []string   `json:"args,omitempty"`
	Start       *time.Time `json:"start,omitempty"`
}

// File is the ECS file group.
type File struct {
	Path      string `json:"path"`
	Name      string `json:"name,omitempty"`
	Directory string `json:"directory,omitempty"`
	Extension string `json:"extension,omitempty"`
	Size      int64  `json:"size,omitempty"`
	Hash      *Hash  `json:"hash,omitempty"`
}

// User is the ECS user group.
type User struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// Error is the ECS error group (used by health events).
type Error struct {
	Message string `json:"message"`
}

// Tillwatch holds the fields ECS has no name for.
type Tillwatch struct {
	Mode     string          `json:"mode,omitempty"`
	Response *Response       `json:"response,omitempty"`
	Process  *ProcessContext `json:"process,omitempty"`
	Health   *Health         `json:"health,omitempty"`
	// RMM is set on alerts about remote-management tools (sensor/detect/rmm).
	RMM *RMM `json:"rmm,omitempty"`
	// FilesAffected counts the files a ransomware detection saw changed,
	// renamed or deleted by the process tree (file.path is the first).
	FilesAffected int         `json:"files_affected,omitempty"`
	Ransomware    *Ransomware `json:"ransomware,omitempty"`
	// KillSwitch is set on alerts and audit events about fleet commands.
	KillSwitch *KillSwitch `json:"killswitch,omitempty"`
	// Campaign is set on the collector's campaign alerts.
	Campaign *Campaign `json:"campaign,omitempty"`
}

// Campaign is tillwatch.campaign: what made alerts on several hosts one
// campaign, which hosts and alerts, and the policy that answered it.
type Campaign struct {
	Key    string   `json:"key"`              // rule:<id>, rmm-command:<fingerprint> or sha256:<hash>
	Hosts  []string `json:"hosts"`            // host ids, sorted
	Alerts []string `json:"alerts,omitempty"` // event ids of the alerts behind it
	Window string   `json:"window"`
	Policy string   `json:"policy"` // alert, disable-rmm, isolate-host
	DryRun bool     `json:"dry_run,omitempty"`
}

// KillSwitch is tillwatch.killswitch: which fleet command an alert or
// audit event is about and what became of it on this host.
type KillSwitch struct {
	CommandID string `json:"command_id,omitempty"`
	Action    string `json:"action,omitempty"`
	Status    string `json:"status,omitempty"`  // ok, noop, failed, refused
	Refusal   string `json:"refusal,omitempty"` // why it was refused
	Detail    string `json:"detail,omitempty"`
}

// Ransomware explains a ransomware detection (tillwatch.ransomware).
type Ransomware struct {
	Score   int      `json:"score"`
	Reasons []string `json:"reasons,omitempty"`
	// Files lists the affected files, first first (bounded).
	Files []string `json:"files,omitempty"`
	// Canary is set when a decoy file planted by the sensor was touched.
	Canary bool `json:"canary,omitempty"`
	// TreePID is the root of the process tree the behaviour was scored on.
	TreePID int `json:"tree_pid,omitempty"`
	// FamilyRoot names the executable of TreePID when the verdict was a
	// family's: the ancestor that spawned many one-file workers (xargs, a
	// shell loop, a launcher), scored and stopped with its whole tree.
	FamilyRoot string `json:"family_root,omitempty"`
	// FamilyWorkers is how many of its workers changed files suspiciously.
	FamilyWorkers int `json:"family_workers,omitempty"`
	// Stopped lists the pids stopped synchronously by the file guard.
	Stopped []int `json:"stopped,omitempty"`
	// Quarantined lists the encryptor executables moved into the sensor's
	// quarantine after the kill (files: quarantine_encryptor).
	Quarantined []string `json:"quarantined,omitempty"`
}

// Response actions (tillwatch.response.action), the closed set of docs/reference.md.
const (
	ActionKill       = "kill"
	ActionSuspend    = "suspend"
	ActionQuarantine = "quarantine"
	ActionDisableRMM = "disable-rmm"
	ActionIsolate    = "isolate"
	ActionNone       = "none"
)

// ResultOK is tillwatch.response.result when the action succeeded; any other
// value is the error text.
const ResultOK = "ok"

// Response records what the sensor did about an alert.
type Response struct {
	Action string `json:"action"`
	Result string `json:"result"`
	Target string `json:"target,omitempty"`
}

// ProcessContext carries the process chain of an alert.
type ProcessContext struct {
	// Ancestry lists the process's ancestors, nearest (the parent) first,
	// up to the first process of the chain the sensor knows.
	Ancestry []Ancestor `json:"ancestry,omitempty"`
}

// Ancestor is one link of tillwatch.process.ancestry.
type Ancestor struct {
	PID         int64      `json:"pid"`
	Name        string     `json:"name,omitempty"`
	Executable  string     `json:"executable,omitempty"`
	CommandLine string     `json:"command_line,omitempty"`
	Start       *time.Time `json:"start,omitempty"`
	Exited      bool       `json:"exited,omitempty"`
}

// Health states (tillwatch.health.state).
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded"
	HealthFailed   = "failed"
)

// HealthFunc receives a part's health changes: component names the part,
// state is HealthOK, HealthDegraded or HealthFailed, and reason says why in
// words an operator can act on. Every part that can degrade takes one; the
// sensor wires pipeline.Health.Report, which turns each change into a
// health event. It is called from the part's own goroutines and must not
// block.
type HealthFunc func(component, state, reason string)

// NoHealth is the HealthFunc of a part built without one (a tool or a
// test that does not watch health): it drops every report.
func NoHealth(component, state, reason string) {}

// RMM is tillwatch.rmm: the remote-management product an alert is about
// and, for behaviour seen below an agent, a fingerprint the collector counts
// across hosts (the same agent spawning the same unusual command line on many
// tills at once is the Kaseya pattern).
type RMM struct {
	Product     string `json:"product,omitempty"`      // catalog id, e.g. "kaseya-vsa"
	ProductName string `json:"product_name,omitempty"` // display name
	Approved    bool   `json:"approved"`               // named in the sensor's rmm.approved
	AgentPID    int64  `json:"agent_pid,omitempty"`    // the agent process the chain descends from
	AgentExe    string `json:"agent_executable,omitempty"`
	Behaviour   string `json:"behaviour,omitempty"`   // behaviour rule kind, e.g. "decode"
	Fingerprint string `json:"fingerprint,omitempty"` // hex sha256 of (product, normalised command line), 32 chars
	// EffectiveName is the system binary a renamed copy really is.
	EffectiveName string `json:"effective_name,omitempty"`
}

// Health is a sensor component's report about itself.
type Health struct {
	Component string `json:"component"`
	State     string `json:"state"`
}

// NewID returns a new globally unique event id: 128 random bits, hex. It is
// assigned once when an event is created and travels with it through every
// retry, which is what lets the stores deduplicate.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand never fails on Linux >= 3.17 and Windows; if it does the
		// machine cannot be trusted to produce anything meaningful.
		panic("event: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}
