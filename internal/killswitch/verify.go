package killswitch

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"time"
)

// domain separates kill-switch signatures from anything else the same key
// might ever sign.
const domain = "tillwatch-killswitch-v1\x00"

// Signature is one key's signature over a Signed payload.
type Signature struct {
	KeyID string `json:"key_id"`
	Sig   []byte `json:"sig"` // base64 in JSON
}

// Signed is the wire form of a command: canonical payload bytes and the
// signatures over them (the issuer's, then any approvals).
type Signed struct {
	Payload    []byte      `json:"payload"` // base64 in JSON
	Signatures []Signature `json:"signatures"`
}

func message(payload []byte) []byte {
	return append([]byte(domain), payload...)
}

// Sign returns priv's signature over payload.
func Sign(priv ed25519.PrivateKey, payload []byte) Signature {
	return Signature{
		KeyID: KeyID(priv.Public().(ed25519.PublicKey)),
		Sig:   ed25519.Sign(priv, message(payload)),
	}
}

// NewSigned encodes c canonically and signs it with priv.
func NewSigned(c *Command, priv ed25519.PrivateKey) (Signed, error) {
	if err := c.Validate(); err != nil {
		return Signed{}, err
	}
	p, err := c.Canonical()
	if err != nil {
		return Signed{}, err
	}
	s := Signed{Payload: p}
	if priv != nil {
		s.Signatures = []Signature{Sign(priv, p)}
	}
	return s, nil
}

// AddSignature appends sig unless the same key signed already.
func (s *Signed) AddSignature(sig Signature) bool {
	for _, have := range s.Signatures {
		if have.KeyID == sig.KeyID {
			return false
		}
	}
	s.Signatures = append(s.Signatures, sig)
	return true
}

// Policy is the authority rule of the kill-switch; sensor and collector
// apply the same one, each enforcing the part it can see.
type Policy struct {
	// Approvals is M: distinct responder keys needed for reversing actions
	// and for bounded actions beyond MaxHosts (default 2).
	Approvals int
	// MaxHosts bounds what one responder key may do with a bounded action
	// in one command (default 5).
	MaxHosts int
	// BudgetWindow is the rolling window of the per-key budget (default
	// 1h). A bounded command signed by fewer than two distinct responders
	// is a single-key command and spends the budget of the key that
	// signed it; a second responder's signature lifts the budget.
	BudgetWindow time.Duration
	// BudgetHosts is how many distinct hosts one key may hit with
	// single-key commands in the window, fleet-wide (default 10). Only the
	// collector sees every command, so only the collector counts this.
	BudgetHosts int
	// BudgetCommands is how many single-key commands one key may have
	// accepted on one host in the window (default 10). Each sensor counts
	// this itself, durably, so it holds even against a collector that
	// skips its own count.
	BudgetCommands int
}

// Defaults of Policy.
const (
	DefaultApprovals      = 2
	DefaultMaxHosts       = 5
	DefaultBudgetWindow   = time.Hour
	DefaultBudgetHosts    = 10
	DefaultBudgetCommands = 10
)

// WithDefaults fills the unset fields.
func (p Policy) WithDefaults() Policy {
	if p.Approvals <= 0 {
		p.Approvals = DefaultApprovals
	}
	if p.MaxHosts <= 0 {
		p.MaxHosts = DefaultMaxHosts
	}
	if p.BudgetWindow <= 0 {
		p.BudgetWindow = DefaultBudgetWindow
	}
	if p.BudgetHosts <= 0 {
		p.BudgetHosts = DefaultBudgetHosts
	}
	if p.BudgetCommands <= 0 {
		p.BudgetCommands = DefaultBudgetCommands
	}
	return p
}

// Required says how many distinct responder signatures c needs; 0 means one
// signature by any pinned key (collector or responder) is enough. Only
// protective actions may be signed by the collector's key alone: anything
// that destroys, cuts off or reverses needs at least one responder key, so
// neither a stolen responder token nor a compromised collector can order it.
func (p Policy) Required(c *Command) int {
	p = p.WithDefaults()
	switch actionClass[c.Action] {
	case Protective:
		return 0
	case Bounded:
		if n, ok := c.Targets.NamedHosts(); ok && n <= p.MaxHosts {
			return 1
		}
		return p.Approvals
	default: // Reversing, and anything unknown
		return p.Approvals
	}
}

// SingleKey reports whether c, with these signers, spends the budget of
// its responder key: a bounded action signed by fewer than two distinct
// responders. The key ids returned are the ones to charge.
func (p Policy) SingleKey(c *Command, s Signers) (keys []string, ok bool) {
	if actionClass[c.Action] != Bounded || len(s.Responders) >= 2 {
		return nil, false
	}
	return s.Responders, len(s.Responders) > 0
}

// Signers summarises which pinned keys validly signed a payload.
type Signers struct {
	Collector  []string // key ids
	Responders []string // key ids, distinct
}

// Satisfies reports whether these signers meet the requirement.
func (s Signers) Satisfies(required int) bool {
	if required == 0 {
		return len(s.Collector)+len(s.Responders) > 0
	}
	return len(s.Responders) >= required
}

// Refusal reasons a sensor reports (tillwatch.killswitch.refusal).
const (
	RefuseMalformed     = "malformed"
	RefuseUnsigned      = "unsigned"
	RefuseBadSignature  = "bad-signature"
	RefuseUnpinnedKey   = "unpinned-key"
	RefuseExpired       = "expired"
	RefuseNotYetValid   = "not-yet-valid"
	RefuseReplayed      = "replayed"
	RefuseMisaddressed  = "misaddressed"
	RefuseUnknownAction = "unknown-action"
	RefuseUnderApproved = "under-approved"
	RefuseOverBudget    = "over-budget"
)

// RefusedError is why a verifier refused a command.
type RefusedError struct {
	Reason    string // one of the Refuse* constants
	Detail    string
	CommandID string // when the payload could be read
}

func (e *RefusedError) Error() string {
	if e.CommandID != "" {
		return fmt.Sprintf("kill-switch command %s refused (%s): %s", e.CommandID, e.Reason, e.Detail)
	}
	return fmt.Sprintf("kill-switch command refused (%s): %s", e.Reason, e.Detail)
}

func refuse(reason, format string, args ...any) *RefusedError {
	return &RefusedError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// ClockSkew is how far a sensor's clock may be from the issuer's.
const ClockSkew = 2 * time.Minute

// CheckSignatures verifies every signature over s.Payload against ks and
// returns the distinct pinned keys that signed. It does not parse the
// payload: a command is read only after a pinned key vouched for it.
func CheckSignatures(s *Signed, ks *KeySet, now time.Time) (Signers, error) {
	var out Signers
	if len(s.Signatures) == 0 {
		return out, refuse(RefuseUnsigned, "no signature")
	}
	if len(s.Signatures) > MaxSignatures {
		return out, refuse(RefuseMalformed, "%d signatures, at most %d", len(s.Signatures), MaxSignatures)
	}
	if len(s.Payload) == 0 || len(s.Payload) > MaxPayload {
		return out, refuse(RefuseMalformed, "payload of %d bytes", len(s.Payload))
	}
	msg := message(s.Payload)
	seen := map[string]bool{}
	var unpinned, bad []string
	for _, sig := range s.Signatures {
		k, ok := ks.Lookup(sig.KeyID)
		if !ok || (!k.NotAfter.IsZero() && now.After(k.NotAfter)) {
			unpinned = append(unpinned, sig.KeyID)
			continue
		}
		if !ed25519.Verify(k.Key, msg, sig.Sig) {
			bad = append(bad, sig.KeyID)
			continue
		}
		if seen[k.ID] {
			continue
		}
		seen[k.ID] = true
		if k.Role == RoleCollector {
			out.Collector = append(out.Collector, k.ID)
		} else {
			out.Responders = append(out.Responders, k.ID)
		}
	}
	// One forged signature beside valid ones is still an attack to report.
	if len(bad) > 0 {
		return out, refuse(RefuseBadSignature, "signature by key %s does not verify", bad[0])
	}
	if len(out.Collector)+len(out.Responders) == 0 {
		return out, refuse(RefuseUnpinnedKey, "signed only by keys this sensor does not pin (%v)", unpinned)
	}
	return out, nil
}

// Verifier is what a sensor runs on every command before acting.
type Verifier struct {
	Keys   *KeySet
	Policy Policy
	HostID string
	Labels map[string]string
	Now    func() time.Time
}

// Verify checks s completely except for replay (see ReplayCache): pinned
// signatures, then strict canonical parsing, action, addressing, validity
// window and approvals. The error is a *RefusedError.
func (v *Verifier) Verify(s *Signed) (Command, Signers, error) {
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	signers, err := CheckSignatures(s, v.Keys, now)
	if err != nil {
		return Command{}, signers, err
	}
	c, err := ParseCanonical(s.Payload)
	if err != nil {
		var re *RefusedError
		reason := RefuseMalformed
		if _, known := actionClass[c.Action]; c.Action != "" && !known {
			reason = RefuseUnknownAction
		}
		re = refuse(reason, "%s", cfgfile.OneLine(err))
		re.CommandID = c.ID
		return c, signers, re
	}
	fail := func(reason, format string, args ...any) (Command, Signers, error) {
		re := refuse(reason, format, args...)
		re.CommandID = c.ID
		return c, signers, re
	}
	if !c.Targets.Match(v.HostID, v.Labels) {
		return fail(RefuseMisaddressed, "addressed to %s, this is host %s", c.Targets, v.HostID)
	}
	if now.Add(ClockSkew).Before(c.NotBefore) {
		return fail(RefuseNotYetValid, "valid from %s, now %s", c.NotBefore.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.Add(-ClockSkew).After(c.NotAfter) {
		return fail(RefuseExpired, "expired at %s, now %s", c.NotAfter.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if req := v.Policy.Required(&c); !signers.Satisfies(req) {
		return fail(RefuseUnderApproved, "%s on %s needs %d distinct responder signatures, has %d", c.Action, c.Targets, req, len(signers.Responders))
	}
	return c, signers, nil
}

// IsRefused returns the refusal inside err, if any.
func IsRefused(err error) (*RefusedError, bool) {
	var re *RefusedError
	ok := errors.As(err, &re)
	return re, ok
}
