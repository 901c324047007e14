package sigma

import (
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
	get  func(ev *event.Event) any
}

// Fields lists, per category, every field a rule may use. A rule naming any
// other field fails lint and load: it could never match, and silently never
// matching is how detection rots.
var Fields = map[string][]Field{
	CategoryProcess: {
		{"Image", "process.executable", func(ev *event.Event) any { return proc(ev).Executable }},
		{"CommandLine", "process.command_line", func(ev *event.Event) any { return proc(ev).CommandLine }},
		{"ParentImage", "process.parent.executable", func(ev *event.Event) any { return parent(ev).Executable }},
		{"ParentCommandLine", "process.parent.command_line", func(ev *event.Event) any { return parent(ev).CommandLine }},
		{"User", "process.user.name (else user.name)", userName},
		{"CurrentDirectory", "process.working_directory", func(ev *event.Event) any { return proc(ev).WorkingDirectory }},
		{"ProcessId", "process.pid", func(ev *event.Event) any { return pid(proc(ev).PID) }},
		{"ParentProcessId", "process.parent.pid", func(ev *event.Event) any { return pid(parent(ev).PID) }},
	},
	CategoryFile: {
		{"TargetFilename", "file.path", func(ev *event.Event) any { return ev.File.Path }},
		{"Image", "process.executable", func(ev *event.Event) any { return proc(ev).Executable }},
		{"User", "process.user.name (else user.name)", userName},
		{"ProcessId", "process.pid", func(ev *event.Event) any { return pid(proc(ev).PID) }},
	},
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

// values is ev as the flat map the engine evaluates, keyed by Sigma names.
// A missing value is "" (not absent) so that "contains" never sees the
// engine's rendering of nil.
func values(cat string, ev *event.Event) map[string]any {
	fs := Fields[cat]
	m := make(map[string]any, len(fs))
	for _, f := range fs {
		m[f.Name] = f.get(ev)
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

func userName(ev *event.Event) any {
	if p := proc(ev); p.User != nil && p.User.Name != "" {
		return p.User.Name
	}
	if ev.User != nil {
		return ev.User.Name
	}
	return ""
}

// pid is an int (the engine's numeric comparators know int, not int64), or
// "" when unknown.
func pid(p int64) any {
	if p <= 0 {
		return ""
	}
	return int(p)
}
