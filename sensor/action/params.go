package action

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Bounds on what a request may carry.
const (
	maxParams     = 8
	maxKeyLen     = 64
	maxValueLen   = 4096
	maxCommandID  = 256
	maxScanPaths  = 64
	maxNameLen    = 255
	maxPID        = 1 << 22 // PID_MAX_LIMIT on 64-bit Linux
	maxStartMilli = 1 << 53
)

// allowedKeys lists, per action, the parameters it accepts.
var allowedKeys = map[string][]string{
	ActDisableRMM:     {"product"},
	ActEnableRMM:      {"product"},
	ActKillProcess:    {"pid", "start_time", "name", "sha256", "path"},
	ActQuarantineFile: {"path"},
	ActIsolateHost:    {},
	ActReleaseHost:    {},
	ActScan:           {"paths"},
}

// Actions returns the allow-list of actions, sorted.
func Actions() []string {
	out := make([]string, 0, len(allowedKeys))
	for a := range allowedKeys {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

var (
	productPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)
	pidPattern     = regexp.MustCompile(`^[1-9][0-9]{0,9}$`)
	startPattern   = regexp.MustCompile(`^[1-9][0-9]{0,15}$`)
	sha256Pattern  = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
)

// params is a validated request.
type params struct {
	product string // disable-rmm, enable-rmm: a product id or "*"
	pid     int
	start   int64 // unix ms; 0 when not given
	name    string
	sha256  string // lower case
	path    string
	paths   []string
}

// Validate checks a request's action and parameters without running it: the
// same checks Run does first. The error is one line naming the problem.
func Validate(r Request) error {
	_, err := parse(r)
	return err
}

func parse(r Request) (params, error) {
	var p params
	keys, ok := allowedKeys[r.Action]
	if !ok {
		return p, fmt.Errorf("unknown action %s (allowed: %s)", quote(r.Action), strings.Join(Actions(), ", "))
	}
	if len(r.CommandID) > maxCommandID || !printable(r.CommandID) {
		return p, fmt.Errorf("command id must be at most %d printable characters", maxCommandID)
	}
	if len(r.Params) > maxParams {
		return p, fmt.Errorf("%s: %d parameters, at most %d", r.Action, len(r.Params), maxParams)
	}
	names := make([]string, 0, len(r.Params))
	for k := range r.Params {
		names = append(names, k)
	}
	slices.Sort(names) // report the same key first every time
	for _, k := range names {
		if !slices.Contains(keys, k) {
			if len(keys) == 0 {
				return p, fmt.Errorf("%s takes no parameters, got %s", r.Action, quote(k))
			}
			return p, fmt.Errorf("%s: unknown parameter %s (allowed: %s)", r.Action, quote(k), strings.Join(keys, ", "))
		}
		v := r.Params[k]
		if v == "" {
			return p, fmt.Errorf("%s: parameter %s is empty", r.Action, k)
		}
		if len(v) > maxValueLen {
			return p, fmt.Errorf("%s: parameter %s is longer than %d bytes", r.Action, k, maxValueLen)
		}
	}
	get := func(k string) (string, bool) { v, ok := r.Params[k]; return v, ok }
	switch r.Action {
	case ActDisableRMM, ActEnableRMM:
		v, ok := get("product")
		if !ok {
			return p, fmt.Errorf("%s: parameter product is required (a catalog product id, or *)", r.Action)
		}
		if v != "*" && !productPattern.MatchString(v) {
			return p, fmt.Errorf("%s: product %s is not a catalog id (lowercase letters, digits, dashes) or *", r.Action, quote(v))
		}
		p.product = v
	case ActKillProcess:
		return parseKill(r.Params)
	case ActQuarantineFile:
		v, ok := get("path")
		if !ok {
			return p, errors.New("quarantine-file: parameter path is required")
		}
		if err := checkPath(v); err != nil {
			return p, fmt.Errorf("quarantine-file: path %w", err)
		}
		p.path = v
	case ActScan:
		v, ok := get("paths")
		if !ok {
			return p, errors.New("scan: parameter paths is required (comma-separated absolute paths)")
		}
		parts := strings.Split(v, ",")
		if len(parts) > maxScanPaths {
			return p, fmt.Errorf("scan: %d paths, at most %d", len(parts), maxScanPaths)
		}
		for _, s := range parts {
			if err := checkPath(s); err != nil {
				return p, fmt.Errorf("scan: path %w", err)
			}
			if !slices.Contains(p.paths, s) {
				p.paths = append(p.paths, s)
			}
		}
	}
	return p, nil
}

func parseKill(m map[string]string) (params, error) {
	var p params
	n := 0
	for _, k := range []string{"pid", "name", "sha256", "path"} {
		if _, ok := m[k]; ok {
			n++
		}
	}
	if n != 1 {
		return p, fmt.Errorf("kill-process: give exactly one of pid, name, sha256, path (got %d)", n)
	}
	if st, ok := m["start_time"]; ok {
		if _, ok := m["pid"]; !ok {
			return p, errors.New("kill-process: start_time is only valid with pid")
		}
		if !startPattern.MatchString(st) {
			return p, fmt.Errorf("kill-process: start_time %s is not unix milliseconds", quote(st))
		}
		v, err := strconv.ParseInt(st, 10, 64)
		if err != nil || v > maxStartMilli {
			return p, fmt.Errorf("kill-process: start_time %s is out of range", quote(st))
		}
		p.start = v
	}
	if v, ok := m["pid"]; ok {
		// A pid alone names whatever holds that number when the command
		// runs, which may be days after it was issued: the start time
		// pins the one process the responder saw.
		if _, ok := m["start_time"]; !ok {
			return p, errors.New("kill-process: pid needs start_time (unix ms of the process start, the alert's process.start), so a reused pid is never killed")
		}
		if !pidPattern.MatchString(v) {
			return p, fmt.Errorf("kill-process: pid %s is not a positive decimal number", quote(v))
		}
		pid, err := strconv.Atoi(v)
		if err != nil || pid > maxPID {
			return p, fmt.Errorf("kill-process: pid %s is out of range", quote(v))
		}
		p.pid = pid
	}
	if v, ok := m["name"]; ok {
		if err := checkName(v); err != nil {
			return p, fmt.Errorf("kill-process: name %w", err)
		}
		p.name = v
	}
	if v, ok := m["sha256"]; ok {
		if !sha256Pattern.MatchString(v) {
			return p, fmt.Errorf("kill-process: sha256 %s is not 64 hex digits", quote(v))
		}
		p.sha256 = strings.ToLower(v)
	}
	if v, ok := m["path"]; ok {
		if err := checkPath(v); err != nil {
			return p, fmt.Errorf("kill-process: path %w", err)
		}
		p.path = v
	}
	return p, nil
}

// checkName accepts a bare process or executable name.
func checkName(v string) error {
	switch {
	case len(v) > maxNameLen:
		return fmt.Errorf("is longer than %d bytes", maxNameLen)
	case !printable(v):
		return fmt.Errorf("%s holds control characters or invalid UTF-8", quote(v))
	case strings.ContainsAny(v, `/\`):
		return fmt.Errorf("%s must be a bare name, not a path", quote(v))
	case v == "." || v == "..":
		return fmt.Errorf("%s is not a process name", quote(v))
	}
	return nil
}

// checkPath accepts an absolute, already clean path: "..", "." and repeated
// separators are refused rather than cleaned, so what the command names is
// exactly what is checked and logged.
func checkPath(v string) error {
	switch {
	case v == "":
		return errors.New("is empty")
	case len(v) > maxValueLen:
		return fmt.Errorf("is longer than %d bytes", maxValueLen)
	case !printable(v):
		return fmt.Errorf("%s holds control characters or invalid UTF-8", quote(v))
	case !filepath.IsAbs(v):
		return fmt.Errorf("%s is not absolute", quote(v))
	case filepath.Clean(v) != v:
		return fmt.Errorf("%s is not clean (holds .., . or repeated or trailing separators)", quote(v))
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return false
		}
	}
	return true
}

// quote renders an untrusted value for an error line, bounded.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strconv.QuoteToASCII(s)
}
