// Package yara is the sensor's YARA engine: it compiles rule files (the
// built-in set and extra folders) with the external variables common public
// rule sets expect, keeps the compiled set behind an atomic pointer so a
// reload never disturbs a running scan, and scans files, buffers and process
// memory at a bounded cost (size limit, timeout, sha256 cache, CPU budget).
//
// libyara is reached through cgo (github.com/hillu/go-yara). A build without
// cgo compiles with YARA off: Compile and New return ErrDisabled, which wraps
// errors.ErrUnsupported.
package yara

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrDisabled is returned by every entry point of a build without cgo.
var ErrDisabled = fmt.Errorf("YARA is not compiled into this build (built without cgo): %w", errors.ErrUnsupported)

// External variable names defined for every rule set. They are the names
// LOKI/THOR-style public rule sets use, so such sets load unmodified.
const (
	ExtFilename  = "filename"  // base name, e.g. "agent.exe"
	ExtFilepath  = "filepath"  // directory, e.g. "/opt/kworking"
	ExtExtension = "extension" // with the dot, lower case, e.g. ".exe"
	ExtFiletype  = "filetype"  // "EXE", "ELF", "PHP", "Python", ... or "" (Filetype: magic, content, extension)
	ExtOwner     = "owner"     // owner's user name (numeric uid if unknown)
)

// Externals are the per-scan values of the external variables. The zero
// value (all empty) is what a memory scan uses.
type Externals struct {
	Filename, Filepath, Extension, Filetype, Owner string
}

func (x Externals) vars() map[string]string {
	return map[string]string{
		ExtFilename: x.Filename, ExtFilepath: x.Filepath, ExtExtension: x.Extension,
		ExtFiletype: x.Filetype, ExtOwner: x.Owner,
	}
}

// Match is one rule that matched, with its metadata mapped to what an alert
// needs (rule.*, threat.technique.id, event.severity).
type Match struct {
	Rule      string   `json:"rule"`
	Namespace string   `json:"namespace"`
	Tags      []string `json:"tags,omitempty"`
	Meta      Meta     `json:"meta"`
}

// Meta is the rule metadata tillwatch reads. Keys follow the common
// conventions: id (or uuid), description, reference, author, technique
// (or mitre_attack; comma-separated ATT&CK ids), severity (or score, 1-100),
// response (kill | suspend | none; only for executed binaries).
type Meta struct {
	ID          string   `json:"id,omitempty"`
	Description string   `json:"description,omitempty"`
	Reference   string   `json:"reference,omitempty"`
	Author      string   `json:"author,omitempty"`
	Techniques  []string `json:"techniques,omitempty"`
	Severity    int      `json:"severity,omitempty"`
	Response    string   `json:"response,omitempty"`
}

// DefaultSeverity is event.severity for a rule without severity or score.
const DefaultSeverity = 50

// metaFrom maps raw rule metadata (identifier -> string, int64 or bool).
func metaFrom(raw []rawMeta) Meta {
	var m Meta
	for _, kv := range raw {
		s := fmt.Sprint(kv.value)
		switch strings.ToLower(kv.key) {
		case "id", "uuid":
			if m.ID == "" {
				m.ID = s
			}
		case "description":
			m.Description = s
		case "reference":
			if m.Reference == "" {
				m.Reference = s
			}
		case "author":
			m.Author = s
		case "technique", "mitre_attack", "mitre_att":
			for _, t := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
				m.Techniques = append(m.Techniques, t)
			}
		case "severity", "score":
			if n, err := strconv.Atoi(s); err == nil && n >= 1 && n <= 100 && m.Severity == 0 {
				m.Severity = n
			}
		case "response":
			m.Response = s
		}
	}
	if m.Severity == 0 {
		m.Severity = DefaultSeverity
	}
	return m
}

type rawMeta struct {
	key   string
	value any
}

// Problem is a rule problem at a place in a file, printed as file:line: reason.
type Problem struct {
	File   string
	Line   int
	Reason string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Reason)
	}
	return p.File + ": " + p.Reason
}

// ProblemsError is a compile failure: every problem found.
type ProblemsError []Problem

func (e ProblemsError) Error() string {
	parts := make([]string, len(e))
	for i, p := range e {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// Scan errors callers branch on (reported as health events).
var (
	ErrTimeout        = errors.New("yara scan timed out")
	ErrTooManyMatches = errors.New("yara: a rule string matched too often (slow or too broad rule)")
	ErrTooLarge       = errors.New("file larger than the scan size limit; not scanned")
)
