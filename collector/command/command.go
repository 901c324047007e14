// Package command is the collector's side of the kill-switch: it issues
// commands (signed with the collector's key when one key may order them,
// otherwise waiting for responder approvals), verifies approvals against
// the responder keys the collector is configured with, and keeps the audit
// trail in the store. The HTTP API and the campaign detector both issue
// through it, so automatic and human commands follow one rule.
package command

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// Defaults.
const (
	DefaultTTL = time.Hour
	// DefaultIssueRate bounds commands one issuer may create: a stolen
	// responder token cannot spray the fleet with thousands of orders.
	DefaultIssueRate  = 10 // per minute
	DefaultIssueBurst = 10
)

// Options configure a Service.
type Options struct {
	Store store.Store // must implement store.CommandStore
	// Key is the collector's signing key.
	Key ed25519.PrivateKey
	// Responders are the responder public keys approvals may come from.
	Responders []killswitch.PublicKey
	Policy     killswitch.Policy
	// IssueRate per issuer per minute (0: DefaultIssueRate).
	IssueRate int
	Now       func() time.Time
	Log       *slog.Logger
	// Notify is called after a command becomes deliverable (to wake
	// long-polls at once rather than at the next generation poll).
	Notify func()
}

// Service issues and approves commands.
type Service struct {
	o    Options
	cs   store.CommandStore
	keys *killswitch.KeySet // collector key + responders: what the collector itself checks

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

// New checks the options.
func New(o Options) (*Service, error) {
	cs, ok := o.Store.(store.CommandStore)
	if !ok {
		return nil, fmt.Errorf("store %T cannot keep kill-switch commands", o.Store)
	}
	if len(o.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("kill-switch: no collector signing key")
	}
	ks, err := killswitch.NewKeySet(CollectorPublicKey(o.Key))
	if err != nil {
		return nil, err
	}
	for _, k := range o.Responders {
		k.Role = killswitch.RoleResponder
		if err := ks.Add(k); err != nil {
			return nil, fmt.Errorf("kill-switch responder key: %w", err)
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.IssueRate <= 0 {
		o.IssueRate = DefaultIssueRate
	}
	return &Service{o: o, cs: cs, keys: ks, limiters: map[string]*rate.Limiter{}}, nil
}

// CollectorPublicKey is the pinned form of the collector's key that
// sensors receive at enrolment.
func CollectorPublicKey(priv ed25519.PrivateKey) killswitch.PublicKey {
	pub := priv.Public().(ed25519.PublicKey)
	return killswitch.PublicKey{ID: killswitch.KeyID(pub), Role: killswitch.RoleCollector, Key: pub, Name: "collector"}
}

// PinnedKeys are the keys a sensor is given at enrolment: the collector's
// own. Responder keys are never handed out by the collector: a sensor pins
// them from files its operator deployed, so a compromised collector cannot
// invent approvers.
func (s *Service) PinnedKeys() []killswitch.PublicKey {
	return []killswitch.PublicKey{CollectorPublicKey(s.o.Key)}
}

// Policy returns the authority rule in force.
func (s *Service) Policy() killswitch.Policy { return s.o.Policy }

// Request is what an issuer asks for.
type Request struct {
	Action  string
	Targets killswitch.Targets
	Params  map[string]string
	Reason  string
	TTL     time.Duration // 0: DefaultTTL
}

// Errors callers map to HTTP answers.
var (
	ErrInvalid     = errors.New("invalid command")
	ErrRateLimited = errors.New("too many commands")
	ErrNoTargets   = errors.New("no enrolled host matches the targets")
	ErrBadApproval = errors.New("approval refused")
	// ErrOverBudget: the approval was kept, but one key alone may not
	// activate the command; a second responder's approval does.
	ErrOverBudget = errors.New("over the key's budget")
)

// IssuerCampaign is the issuer of the automatic campaign policy's
// commands, the only ones besides scan that the collector signs alone.
const IssuerCampaign = "collector:campaign"

// Issue creates a command for issuer ("responder:<token id>" or
// IssuerCampaign). It is signed by the collector and active at once
// when the policy lets one key order it; otherwise it waits for approvals.
func (s *Service) Issue(ctx context.Context, issuer string, r Request) (store.CommandRecord, error) {
	if !s.limiter(issuer).Allow() {
		return store.CommandRecord{}, fmt.Errorf("%w: %s may issue %d per minute", ErrRateLimited, issuer, s.o.IssueRate)
	}
	now := s.o.Now().UTC()
	ttl := r.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	c := killswitch.Command{
		V: killswitch.Version, ID: newID(now), IssuedAt: now, NotBefore: now, NotAfter: now.Add(ttl),
		Issuer: issuer, Targets: r.Targets, Action: r.Action, Params: r.Params, Reason: r.Reason,
	}
	if err := c.Validate(); err != nil {
		return store.CommandRecord{}, fmt.Errorf("%w: %s", ErrInvalid, cfgfile.OneLine(err))
	}
	hosts, err := s.o.Store.Hosts(ctx)
	if err != nil {
		return store.CommandRecord{}, err
	}
	var ids []string
	for _, h := range hosts {
		if c.Targets.Match(h.HostID, h.Labels) {
			ids = append(ids, h.HostID)
		}
	}
	if len(ids) == 0 {
		return store.CommandRecord{}, fmt.Errorf("%w (%s)", ErrNoTargets, c.Targets)
	}
	required := s.o.Policy.Required(&c)
	if required == 0 && issuer != IssuerCampaign && c.Action != killswitch.ActionScan {
		// A responder token is a bearer secret on a laptop: alone it
		// may only read (scan). Anything that acts needs a responder
		// key's signature, so a stolen token cannot order it.
		required = 1
	}
	var signed killswitch.Signed
	state := store.CommandPendingApproval
	if required == 0 {
		signed, err = killswitch.NewSigned(&c, s.o.Key)
		state = store.CommandActive
	} else {
		signed, err = killswitch.NewSigned(&c, nil)
	}
	if err != nil {
		return store.CommandRecord{}, err
	}
	rec := store.CommandRecord{
		ID: c.ID, Action: c.Action, Targets: c.Targets.String(), Issuer: issuer, Reason: c.Reason,
		IssuedAt: c.IssuedAt, NotAfter: c.NotAfter, State: state, Required: required, Signed: signed,
	}
	if err := s.cs.CreateCommand(ctx, rec, ids); err != nil {
		return store.CommandRecord{}, err
	}
	s.o.Log.Warn("kill-switch command issued", logkey.Command, c.ID, logkey.Action, c.Action,
		"targets", c.Targets.String(), "hosts", len(ids), "issuer", issuer, "state", state, "reason", c.Reason)
	if state == store.CommandActive && s.o.Notify != nil {
		s.o.Notify()
	}
	return rec, nil
}

// Approve adds a responder's signature. The key must be one of the
// collector's configured responder keys and the signature must verify over
// the stored payload; the command turns active once enough distinct
// responders signed.
func (s *Service) Approve(ctx context.Context, id string, sig killswitch.Signature) (store.CommandRecord, error) {
	// Responders approving at once each read the record, add their
	// signature and write back; the store's compare-and-swap refuses every
	// write but one, and the others read again, so no signature is lost.
	for range approveRetries {
		rec, err := s.approveOnce(ctx, id, sig)
		if !errors.Is(err, store.ErrCommandConflict) {
			return rec, err
		}
	}
	return store.CommandRecord{}, fmt.Errorf("command %s: approvals still conflicting after %d attempts; try again", id, approveRetries)
}

// approveRetries bounds Approve's compare-and-swap loop: each conflict
// means another approval went in, and a command has few approvers.
const approveRetries = 32

func (s *Service) approveOnce(ctx context.Context, id string, sig killswitch.Signature) (store.CommandRecord, error) {
	rec, _, err := s.cs.Command(ctx, id)
	if err != nil {
		return rec, err
	}
	k, ok := s.keys.Lookup(sig.KeyID)
	if !ok || k.Role != killswitch.RoleResponder {
		return rec, fmt.Errorf("%w: key %s is not a responder key of this collector (add its .pub to killswitch.responder_keys)", ErrBadApproval, sig.KeyID)
	}
	if !s.o.Now().Before(rec.NotAfter) {
		return rec, fmt.Errorf("%w: command %s expired at %s", ErrBadApproval, id, rec.NotAfter.Format(time.RFC3339))
	}
	signed := rec.Signed
	prev := len(signed.Signatures)
	signed.Signatures = slices.Clone(signed.Signatures) // rec keeps what was read
	trial := killswitch.Signed{Payload: signed.Payload, Signatures: []killswitch.Signature{sig}}
	if _, err := killswitch.CheckSignatures(&trial, s.keys, s.o.Now()); err != nil {
		return rec, fmt.Errorf("%w: %s", ErrBadApproval, cfgfile.OneLine(err))
	}
	if !signed.AddSignature(sig) {
		return rec, nil // the same responder again: nothing changes
	}
	signers, err := killswitch.CheckSignatures(&signed, s.keys, s.o.Now())
	if err != nil {
		return rec, fmt.Errorf("%w: %s", ErrBadApproval, cfgfile.OneLine(err))
	}
	state := rec.State
	var over error
	if signers.Satisfies(rec.Required) {
		state = store.CommandActive
		if over, err = s.overBudget(ctx, rec, signers); err != nil {
			return rec, err
		}
		if over != nil {
			state = rec.State
		}
	}
	if err := s.cs.UpdateCommand(ctx, id, prev, signed, state); err != nil {
		return rec, err
	}
	s.o.Log.Warn("kill-switch command approved", logkey.Command, id, "key_id", sig.KeyID,
		"responders", len(signers.Responders), "required", rec.Required, "state", state)
	if state == store.CommandActive && rec.State != store.CommandActive && s.o.Notify != nil {
		s.o.Notify()
	}
	rec.Signed, rec.State = signed, state
	if over != nil {
		s.o.Log.Warn("kill-switch approval over the key's budget; the command waits for a second responder",
			logkey.Command, id, "key_id", sig.KeyID, logkey.Reason, over.Error())
		return rec, over
	}
	return rec, nil
}

// budgetScan bounds how many recent commands the fleet-wide budget reads.
const budgetScan = 2000

// overBudget applies the fleet-wide per-key budget to a command about to
// turn active with one responder key (Policy.SingleKey): the distinct
// hosts that key has hit with single-key commands in the window, with
// this command's, may not exceed Policy.BudgetHosts. A command counts
// when it was issued within the window or is still unexpired, so approving
// old pending commands all at once gains nothing. The answer is an
// ErrOverBudget error to report, or nil.
func (s *Service) overBudget(ctx context.Context, rec store.CommandRecord, signers killswitch.Signers) (error, error) {
	c, err := killswitch.ParseCanonical(rec.Signed.Payload)
	if err != nil {
		return nil, fmt.Errorf("command %s: stored payload: %w", rec.ID, err)
	}
	p := s.o.Policy.WithDefaults()
	keys, single := p.SingleKey(&c, signers)
	if !single {
		return nil, nil
	}
	now := s.o.Now()
	cut := now.Add(-p.BudgetWindow)
	recent, err := s.cs.Commands(ctx, budgetScan)
	if err != nil {
		return nil, err
	}
	_, mine, err := s.cs.Command(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	for _, key := range keys {
		hosts := map[string]bool{}
		for _, h := range mine {
			hosts[h.HostID] = true
		}
		for _, o := range recent {
			if o.ID == rec.ID || o.State != store.CommandActive || (o.IssuedAt.Before(cut) && !o.NotAfter.After(now)) {
				continue
			}
			oc, err := killswitch.ParseCanonical(o.Signed.Payload)
			if err != nil {
				continue
			}
			osig, err := killswitch.CheckSignatures(&o.Signed, s.keys, now)
			if err != nil {
				continue
			}
			okeys, osingle := p.SingleKey(&oc, osig)
			if !osingle || !slices.Contains(okeys, key) {
				continue
			}
			_, ohosts, err := s.cs.Command(ctx, o.ID)
			if err != nil {
				return nil, err
			}
			for _, h := range ohosts {
				hosts[h.HostID] = true
			}
		}
		if len(hosts) > p.BudgetHosts {
			return fmt.Errorf("%w: responder key %s would reach %d distinct hosts with single-key destructive commands in %s (budget %d); the approval is kept, and a second responder's approval activates %s",
				ErrOverBudget, key, len(hosts), p.BudgetWindow, p.BudgetHosts, rec.ID), nil
		}
	}
	return nil, nil
}

func (s *Service) limiter(issuer string) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.limiters[issuer]
	if !ok {
		l = rate.NewLimiter(rate.Limit(float64(s.o.IssueRate)/60), min(s.o.IssueRate, DefaultIssueBurst))
		s.limiters[issuer] = l
	}
	return l
}

// newID is sortable by time and unguessable.
func newID(now time.Time) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return fmt.Sprintf("ks-%x-%s", now.Unix(), hex.EncodeToString(b[:]))
}
