// Package sigma evaluates Sigma rules (rules/sigma and the sigma/ folder of
// every --rules tree, nested folders included) on the sensor's own process
// and file events. It reads rules as published (SigmaHQ and others): every
// attribute of the Sigma specification, every value modifier and the full
// condition grammar. Fields are mapped to tillwatch's ECS events (Fields);
// a valid rule that cannot run on them (another log source, a field
// tillwatch has no value for) is kept as not applicable with its reason,
// and a rule that is not valid Sigma is reported and skipped: no rule file
// stops the sensor.
package sigma

import (
	"fmt"
	"regexp"

	"github.com/tillwatch/tillwatch/sensor/alert"
)

// Rule is one loaded Sigma rule.
type Rule struct {
	File        string // path in the rule tree, for messages
	ID          string
	Title       string
	Description string
	Reference   string   // the first of references
	Authors     []string // author, split at commas
	Level       string
	Status      string
	Severity    int
	Category    string // logsource.category
	Product     string // logsource.product (linux, windows, macos, ...) or ""
	Service     string // logsource.service
	Techniques  []string
	Tactic      *alert.Technique
	// NotApplicable says why the rule, although valid, cannot run on
	// tillwatch's events ("" when it can): it is linted and skipped.
	NotApplicable string

	searches map[string]*search
	names    []string  // search names, sorted
	conds    []expr    // any condition holding is a match
	ordered  []*search // searches in names order, for run
	run      []compiled
}

// Problem levels.
const (
	LevelError   = "error"   // the rule is not valid Sigma (or not ours): skipped
	LevelWarning = "warning" // loaded; something to fix or know
	LevelSkipped = "skipped" // valid but not applicable on tillwatch's events
)

// Problem is one thing wrong with, or to know about, a rule file or sample.
type Problem struct {
	File   string
	Line   int // 0 if unknown
	Level  string
	Reason string
}

func (p Problem) String() string {
	pre := p.File
	if p.Line > 0 {
		pre = fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	if p.Level == LevelWarning || p.Level == LevelSkipped {
		return pre + ": " + p.Level + ": " + p.Reason
	}
	return pre + ": " + p.Reason
}

// Severities maps Sigma levels to event.severity (1-100).
var Severities = map[string]int{"informational": 21, "low": 21, "medium": 47, "high": 73, "critical": 99}

// MaxFileSize bounds a rule file; anything larger is not a rule.
const MaxFileSize = 1 << 20

// specKeys are the top-level attributes of the Sigma rule specification
// (2.x). Others are kept and warned about: a misspelt "level" is then
// visible, and a vendor's extra key does not cost the rule.
var specKeys = map[string]bool{
	"title": true, "id": true, "name": true, "related": true, "taxonomy": true, "status": true,
	"description": true, "license": true, "author": true, "references": true, "date": true,
	"modified": true, "logsource": true, "detection": true, "fields": true, "falsepositives": true,
	"level": true, "tags": true, "scope": true,
}

// otherRuleTypes are Sigma documents that are not detection rules.
var otherRuleTypes = map[string]string{
	"correlation": "correlation rules (aggregations over several rules) are not supported",
	"filter":      "filter rules (meta rules that amend others) are not supported",
	"action":      "a collection action document (action: global/reset/repeat) is not supported; split the rule",
}

var (
	techniqueTag = regexp.MustCompile(`^attack\.(t\d{4}(?:\.\d{3})?)$`)
	yamlLine     = regexp.MustCompile(`line (\d+)`)
)

// tactics are the ATT&CK Enterprise tactics by their Sigma tag name.
var tactics = map[string]alert.Technique{
	"reconnaissance": {ID: "TA0043", Name: "Reconnaissance"}, "resource_development": {ID: "TA0042", Name: "Resource Development"},
	"initial_access": {ID: "TA0001", Name: "Initial Access"}, "execution": {ID: "TA0002", Name: "Execution"},
	"persistence": {ID: "TA0003", Name: "Persistence"}, "privilege_escalation": {ID: "TA0004", Name: "Privilege Escalation"},
	"defense_evasion": {ID: "TA0005", Name: "Defense Evasion"}, "credential_access": {ID: "TA0006", Name: "Credential Access"},
	"discovery": {ID: "TA0007", Name: "Discovery"}, "lateral_movement": {ID: "TA0008", Name: "Lateral Movement"},
	"collection": {ID: "TA0009", Name: "Collection"}, "command_and_control": {ID: "TA0011", Name: "Command and Control"},
	"exfiltration": {ID: "TA0010", Name: "Exfiltration"}, "impact": {ID: "TA0040", Name: "Impact"},
}
