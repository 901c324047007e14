// Package killswitch is the signed fleet command (docs/reference.md
// "Kill-switch commands"): its canonical encoding, Ed25519 signatures and key ids, the
// authority policy (who may order what at which blast radius), and the
// verification every sensor runs before it acts. The collector, the CLI and
// the sensor share this one definition, so what is signed is exactly what is
// verified.
//
// Wire form: a Signed envelope carries the command's canonical JSON bytes
// (Payload) and one or more signatures over them. A verifier checks the
// signatures over those bytes before it parses them, then parses strictly
// and requires the bytes to be the canonical encoding of what it parsed, so
// two parsers can never disagree about what was signed (no duplicate keys,
// no unknown fields, no alternative spellings).
package killswitch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Version is the command format version carried in every payload.
const Version = 1

// Actions (the allow-list of docs/reference.md). The sensor runs no other action.
const (
	ActionDisableRMM     = "disable-rmm"
	ActionEnableRMM      = "enable-rmm"
	ActionKillProcess    = "kill-process"
	ActionQuarantineFile = "quarantine-file"
	ActionIsolateHost    = "isolate-host"
	ActionReleaseHost    = "release-host"
	ActionScan           = "scan"
)

// Class is an action's blast radius, which decides who may order it.
type Class int

const (
	// Protective actions only stop remote management or read: one
	// signature by any pinned key, at any scope.
	Protective Class = iota + 1
	// Bounded actions destroy or cut off locally: one signature by any
	// pinned key on at most Policy.MaxHosts named hosts, M distinct
	// responders beyond that.
	Bounded
	// Reversing actions undo a protection, which is what an attacker
	// holding one key would want: always M distinct responders.
	Reversing
)

var actionClass = map[string]Class{
	ActionDisableRMM:     Protective,
	ActionScan:           Protective,
	ActionKillProcess:    Bounded,
	ActionQuarantineFile: Bounded,
	ActionIsolateHost:    Bounded,
	ActionEnableRMM:      Reversing,
	ActionReleaseHost:    Reversing,
}

// Actions returns the allow-listed actions, sorted.
func Actions() []string {
	out := make([]string, 0, len(actionClass))
	for a := range actionClass {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// ClassOf returns the action's class; ok is false for an unknown action.
func ClassOf(action string) (c Class, ok bool) {
	c, ok = actionClass[action]
	return c, ok
}

// Limits on a command. A command lives at most MaxLifetime so a sensor's
// replay cache stays bounded by what was issued in that window.
const (
	MaxLifetime   = 7 * 24 * time.Hour
	MaxPayload    = 16 << 10
	MaxSignatures = 16
	MaxTargets    = 20000
	MaxParams     = 16
	MaxParamBytes = 4096
)

// Targets selects hosts: All, or a list of host ids, or label selectors
// (every label must match). Exactly one form is set.
type Targets struct {
	All    bool              `json:"all,omitempty"`
	Hosts  []string          `json:"hosts,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Match reports whether a host with that id and those labels is addressed.
func (t Targets) Match(hostID string, labels map[string]string) bool {
	switch {
	case t.All:
		return true
	case len(t.Hosts) > 0:
		return slices.Contains(t.Hosts, hostID)
	case len(t.Labels) > 0:
		for k, v := range t.Labels {
			if labels[k] != v {
				return false
			}
		}
		return true
	}
	return false
}

// NamedHosts returns the number of hosts when the targets are an explicit
// host list; ok is false for All and label selectors, whose reach is not
// bounded at signing time.
func (t Targets) NamedHosts() (n int, ok bool) {
	if t.All || len(t.Labels) > 0 {
		return 0, false
	}
	return len(t.Hosts), true
}

// String is a short human form for logs and tables.
func (t Targets) String() string {
	switch {
	case t.All:
		return "all"
	case len(t.Hosts) == 1:
		return "host:" + t.Hosts[0]
	case len(t.Hosts) > 1:
		return fmt.Sprintf("%d hosts", len(t.Hosts))
	}
	keys := make([]string, 0, len(t.Labels))
	for k := range t.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%s", k, t.Labels[k])
	}
	return "labels:" + b.String()
}

// Command is what a signature covers.
type Command struct {
	V         int               `json:"v"`
	ID        string            `json:"id"`
	IssuedAt  time.Time         `json:"issued_at"`
	NotBefore time.Time         `json:"not_before"`
	NotAfter  time.Time         `json:"not_after"`
	Issuer    string            `json:"issuer"`
	Targets   Targets           `json:"targets"`
	Action    string            `json:"action"`
	Params    map[string]string `json:"params,omitempty"`
	Reason    string            `json:"reason,omitempty"`
}

// The command's identifiers and tokens are checked by hand, not with
// regexps: a counted repetition such as [...]{1,256} compiles to a program
// of 256 copies, about 300 KB of heap held by every binary from its start
// (the sensor's idle footprint) for a check that runs once per command.

// isID reports whether s is 8-64 characters of [A-Za-z0-9_-].
func isID(s string) bool {
	return allIn(s, 8, 64, func(c byte, _ int) bool { return alnum(c) || c == '_' || c == '-' })
}

// isToken reports whether s is 1-256 characters of [A-Za-z0-9@._:/-].
func isToken(s string) bool {
	return allIn(s, 1, 256, func(c byte, _ int) bool { return alnum(c) || strings.IndexByte("@._:/-", c) >= 0 })
}

// isParamKey reports whether s is [a-z][a-z0-9_]{0,31}.
func isParamKey(s string) bool {
	return allIn(s, 1, 32, func(c byte, i int) bool {
		return c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '_')
	})
}

// allIn reports whether s is min to max bytes long and ok accepts each
// byte (at its index). Only ASCII is ever accepted, so bytes are characters.
func allIn(s string, min, max int, ok func(c byte, i int) bool) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i], i) {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

// Validate checks everything that does not need a clock or a key set.
func (c *Command) Validate() error {
	var errs []error
	if c.V != Version {
		errs = append(errs, fmt.Errorf("format version %d, this build understands %d", c.V, Version))
	}
	if !isID(c.ID) {
		errs = append(errs, fmt.Errorf("id %q is not 8-64 characters of [A-Za-z0-9_-]", c.ID))
	}
	if _, ok := actionClass[c.Action]; !ok {
		errs = append(errs, fmt.Errorf("unknown action %q (allowed: %v)", c.Action, Actions()))
	}
	if c.IssuedAt.IsZero() || c.NotBefore.IsZero() || c.NotAfter.IsZero() {
		errs = append(errs, errors.New("issued_at, not_before and not_after are required"))
	} else {
		if !c.NotAfter.After(c.NotBefore) {
			errs = append(errs, errors.New("not_after is not after not_before"))
		}
		if c.NotAfter.Sub(c.IssuedAt) > MaxLifetime {
			errs = append(errs, fmt.Errorf("lifetime %s exceeds %s", c.NotAfter.Sub(c.IssuedAt), MaxLifetime))
		}
	}
	if !isToken(c.Issuer) {
		errs = append(errs, fmt.Errorf("issuer %q is empty or has characters outside [A-Za-z0-9@._:/-]", c.Issuer))
	}
	if err := c.Targets.validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Params) > MaxParams {
		errs = append(errs, fmt.Errorf("%d params, at most %d", len(c.Params), MaxParams))
	}
	for k, v := range c.Params {
		if !isParamKey(k) {
			errs = append(errs, fmt.Errorf("param name %q is not [a-z][a-z0-9_]*", k))
		}
		if len(v) > MaxParamBytes {
			errs = append(errs, fmt.Errorf("param %s is %d bytes, at most %d", k, len(v), MaxParamBytes))
		}
	}
	if err := c.checkPIDKill(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Reason) > MaxParamBytes {
		errs = append(errs, fmt.Errorf("reason is %d bytes, at most %d", len(c.Reason), MaxParamBytes))
	}
	return errors.Join(errs...)
}

// ErrPIDWithoutStart refuses kill-process by pid without start_time: a pid
// alone names whatever holds that number when the command runs, which may
// be days after it was issued, not the process the responder saw.
var ErrPIDWithoutStart = errors.New("kill-process by pid needs start_time (unix ms of the process start, the alert's process.start), so a reused pid is never killed")

func (c *Command) checkPIDKill() error {
	if c.Action != ActionKillProcess {
		return nil
	}
	if _, pid := c.Params["pid"]; !pid {
		return nil
	}
	if st, ok := c.Params["start_time"]; !ok || st == "" {
		return ErrPIDWithoutStart
	}
	return nil
}

func (t Targets) validate() error {
	forms := 0
	if t.All {
		forms++
	}
	if len(t.Hosts) > 0 {
		forms++
	}
	if len(t.Labels) > 0 {
		forms++
	}
	if forms != 1 {
		return errors.New("targets must be exactly one of all, hosts or labels")
	}
	if len(t.Hosts) > MaxTargets {
		return fmt.Errorf("%d target hosts, at most %d", len(t.Hosts), MaxTargets)
	}
	seen := make(map[string]bool, len(t.Hosts))
	for _, h := range t.Hosts {
		if !isToken(h) {
			return fmt.Errorf("target host %q is empty or has characters outside [A-Za-z0-9@._:/-]", h)
		}
		if seen[h] {
			return fmt.Errorf("target host %q listed twice", h)
		}
		seen[h] = true
	}
	for k, v := range t.Labels {
		if !isToken(k) || !isToken(v) {
			return fmt.Errorf("label selector %q=%q has characters outside [A-Za-z0-9@._:/-]", k, v)
		}
	}
	return nil
}

// Canonical returns the one byte form of c that gets signed: encoding/json
// with fields in declaration order, map keys sorted, times in UTC with
// nanoseconds, no insignificant whitespace and no HTML escaping.
func (c *Command) Canonical() ([]byte, error) {
	cc := *c
	cc.IssuedAt = cc.IssuedAt.UTC()
	cc.NotBefore = cc.NotBefore.UTC()
	cc.NotAfter = cc.NotAfter.UTC()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&cc); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// ParseCanonical decodes payload strictly and refuses anything that is not
// byte for byte the canonical encoding of the command it decodes to.
func ParseCanonical(payload []byte) (Command, error) {
	var c Command
	if len(payload) > MaxPayload {
		return c, fmt.Errorf("payload is %d bytes, at most %d", len(payload), MaxPayload)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("payload: %w", err)
	}
	if dec.More() {
		return c, errors.New("payload: data after the command")
	}
	again, err := c.Canonical()
	if err != nil {
		return c, err
	}
	if !bytes.Equal(again, payload) {
		return c, errors.New("payload is not in canonical form (re-encoding differs: duplicate keys, whitespace, escaping or non-UTC times)")
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}
