package sigma

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tillwatch/tillwatch/internal/event"
)

// Categories (logsource.category) the detector evaluates.
const (
	CategoryProcess = "process_creation" // event.action "exec"
	CategoryFile    = "file_event"       // tillwatch.file create, close-write, rename
)

// fileActions are the tillwatch.file actions a file_event rule sees: a file
// came into being or got new content. Deletes and opens are not file_event.
var fileActions = map[string]bool{"create": true, "close-write": true, "rename": true}

// Field is one Sigma field the sensor fills from its own ECS event.
type Field struct {
	Name string // Sigma (Sysmon) name, e.g. "Image"
	ECS  string // where the value comes from, e.g. "process.executable"
	get  func(ev *event.Event) string
}

// Fields lists, per category, every field a rule may use. A rule naming
// another field is not applicable (NoValue says why for the known ones):
// it could never match, and silently never matching is how detection rots.
var Fields = map[string][]Field{
	CategoryProcess: {
		{"Image", "process.executable", func(ev *event.Event) string { return proc(ev).Executable }},
		{"CommandLine", "process.command_line", func(ev *event.Event) string { return proc(ev).CommandLine }},
		{"ParentImage", "process.parent.executable", func(ev *event.Event) string { return parent(ev).Executable }},
		{"ParentCommandLine", "process.parent.command_line", func(ev *event.Event) string { return parent(ev).CommandLine }},
		{"User", "process.user.name (else user.name)", userName},
		{"CurrentDirectory", "process.working_directory", func(ev *event.Event) string { return proc(ev).WorkingDirectory }},
		{"ProcessId", "process.pid", func(ev *event.Event) string { return pid(proc(ev).PID) }},
		{"ParentProcessId", "process.parent.pid", func(ev *event.Event) string { return pid(parent(ev).PID) }},
		{"ProcessGuid", "process.entity_id", func(ev *event.Event) string { return proc(ev).EntityID }},
		{"ParentProcessGuid", "process.parent.entity_id", func(ev *event.Event) string { return parent(ev).EntityID }},
		{"Hashes", "process.hash.sha256 as SHA256=<hex>", func(ev *event.Event) string { return hashes(proc(ev).Hash) }},
	},
	CategoryFile: {
		{"TargetFilename", "file.path", func(ev *event.Event) string { return ev.File.Path }},
		{"Image", "process.executable", func(ev *event.Event) string { return proc(ev).Executable }},
		{"User", "process.user.name (else user.name)", userName},
		{"ProcessId", "process.pid", func(ev *event.Event) string { return pid(proc(ev).PID) }},
		{"ProcessGuid", "process.entity_id", func(ev *event.Event) string { return proc(ev).EntityID }},
	},
}

// NoValue lists the Sysmon/Windows fields public rules use that tillwatch's
// events have no analogue for, with the reason: a rule using one is not
// applicable (skipped with that reason), not broken.
var NoValue = map[string]string{
	"OriginalFileName":  "PE version-resource name; ELF binaries have none and the sensor reads no PE metadata",
	"Product":           "PE version-resource field; not read by the sensor",
	"Company":           "PE version-resource field; not read by the sensor",
	"Description":       "PE version-resource field; not read by the sensor",
	"FileVersion":       "PE version-resource field; not read by the sensor",
	"IntegrityLevel":    "Windows integrity level; no Linux analogue",
	"LogonId":           "Windows logon session id; not on tillwatch events",
	"LogonGuid":         "Windows logon session id; not on tillwatch events",
	"TerminalSessionId": "Windows session id; not on tillwatch events",
	"ParentUser":        "the parent's user is not on tillwatch events",
	"Signed":            "code-signing state; not read by the sensor",
	"Signature":         "code-signing state; not read by the sensor",
	"SignatureStatus":   "code-signing state; not read by the sensor",
	"Imphash":           "PE import hash; not computed",
	"CreationUtcTime":   "file creation time; not on tillwatch events",
	"EventID":           "Windows event id; the sensor's events have none",
	"Provider_Name":     "Windows event provider; the sensor's events have none",
}

// fieldNA says why field cannot be evaluated in category, "" if it can.
func fieldNA(category, field string) string {
	if slices.ContainsFunc(Fields[category], func(f Field) bool { return f.Name == field }) {
		return ""
	}
	if why, ok := NoValue[field]; ok {
		return fmt.Sprintf("field %s: %s", field, why)
	}
	var names []string
	for _, f := range Fields[category] {
		names = append(names, f.Name)
	}
	return fmt.Sprintf("field %s is not on tillwatch's %s events (mapped: %s)", field, category, strings.Join(names, ", "))
}

// categoryOf is the logsource category ev belongs to, "" if none: only
// telemetry is evaluated, never alerts or health.
func categoryOf(ev *event.Event) string {
	switch {
	case ev.Event.Kind != event.KindEvent:
		return ""
	case ev.Event.Action == "exec" && ev.Process != nil:
		return CategoryProcess
	case ev.Event.Dataset == event.DatasetFile && fileActions[ev.Event.Action] && ev.File != nil && ev.File.Path != "":
		return CategoryFile
	}
	return ""
}

// values is ev as the flat record rules evaluate, keyed by Sigma names. A
// missing value is "".
func values(cat string, ev *event.Event) record {
	fs := Fields[cat]
	m := newRecord(len(fs))
	for _, f := range fs {
		m.set(f.Name, f.get(ev))
	}
	return m
}

var (
	noProcess event.Process
	noParent  event.ParentProcess
)

func proc(ev *event.Event) *event.Process {
	if ev.Process == nil {
		return &noProcess
	}
	return ev.Process
}

func parent(ev *event.Event) *event.ParentProcess {
	if ev.Process == nil || ev.Process.Parent == nil {
		return &noParent
	}
	return ev.Process.Parent
}

func userName(ev *event.Event) string {
	if p := proc(ev); p.User != nil && p.User.Name != "" {
		return p.User.Name
	}
	if ev.User != nil {
		return ev.User.Name
	}
	return ""
}

// hashes renders the executable's hash as Sysmon's Hashes field does
// ("SHA256=<HEX>"), so `Hashes|contains: SHA256=...` rules work.
func hashes(h *event.Hash) string {
	if h == nil || h.SHA256 == "" {
		return ""
	}
	return "SHA256=" + strings.ToUpper(h.SHA256)
}

// pid is the decimal pid, or "" when unknown.
func pid(p int64) string {
	if p <= 0 {
		return ""
	}
	return strconv.FormatInt(p, 10)
}
