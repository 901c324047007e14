// Package uplink is the sensor's connection to the collector: it enrols
// with the enrolment token (once; the credential is kept in the state dir),
// presents the credential on every request, renews it with itself before
// it expires, and enrols again when the collector no longer takes it (a
// rebuilt collector, a credential that expired offline) and a token is at
// hand. Every enrolment presents the host key, made once before the first:
// the collector binds the host id to it.
package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/identity"
)

// Options configure an Uplink.
type Options struct {
	Client    *client.Client // pinned to the collector's CA; token set per call
	URL       string
	StateDir  string
	TokenFile string // enrolment token; may be empty once enrolled
	Request   api.EnrollRequest
	Log       *slog.Logger
}

// Uplink implements shipper.Sender and shipper.HeartbeatSender.
type Uplink struct {
	o  Options
	mu sync.Mutex
	id identity.Identity
	// renewAfter holds off renewal attempts after a failed one.
	renewAfter time.Time
	// Now is the clock (tests move it); nil means time.Now.
	Now func() time.Time
}

// renewRetry spaces renewal attempts that failed; the credential keeps
// working meanwhile.
const renewRetry = time.Hour

// ErrNotEnrolled means there is no credential and no token to get one.
var ErrNotEnrolled = errors.New("not enrolled and no enrolment token: give --enroll-token (create one with `tillwatch-collector token create --role sensor`)")

// New loads the kept identity; it does not contact the collector.
func New(o Options) (*Uplink, error) {
	id, err := identity.Load(o.StateDir)
	if err != nil {
		return nil, err
	}
	if id.HostID != o.Request.HostID {
		// Another host id (e.g. --host-id changed): that credential and
		// host key are not ours.
		id = identity.Identity{HostID: o.Request.HostID}
	}
	return &Uplink{o: o, id: id}, nil
}

// Identity returns the current identity.
func (u *Uplink) Identity() identity.Identity {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.id
}

// Enrolled reports whether a credential for this collector is held.
func (u *Uplink) Enrolled() bool { return u.Identity().Enrolled(u.o.URL) }

// Enroll obtains a credential if none is held (force: even if one is).
func (u *Uplink) Enroll(ctx context.Context, force bool) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !force && u.id.Enrolled(u.o.URL) {
		return nil
	}
	if u.o.TokenFile == "" {
		return ErrNotEnrolled
	}
	tok, err := identity.ReadToken(u.o.TokenFile)
	if err != nil {
		return err
	}
	if err := u.ensureHostKey(); err != nil {
		return err
	}
	req := u.o.Request
	req.HostKey = u.id.HostKey
	resp, err := u.o.Client.WithToken(tok).Enroll(ctx, req)
	var he *client.HTTPError
	if errors.As(err, &he) && he.StatusCode == http.StatusConflict {
		return fmt.Errorf("enrolment as %s refused: %w; the collector holds this host id for another host key "+
			"(this till was reinstalled, or another machine took the id): enrol with a host-specific token from "+
			"`tillwatch-collector token create --role sensor --host %s --uses 1`", req.HostID, err, req.HostID)
	}
	if errors.As(err, &he) && (he.StatusCode == http.StatusUnauthorized || he.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("enrolment with %s: %w; create a token with `tillwatch-collector token create --role sensor`", u.o.TokenFile, err)
	}
	if err != nil {
		return fmt.Errorf("enrolment: %w", err)
	}
	if err := u.keep(resp); err != nil {
		return err
	}
	u.o.Log.Info("enrolled with the collector", logkey.URL, u.o.URL, logkey.HostID, resp.HostID, logkey.AgentID, resp.AgentID,
		"credential_expires", resp.CredentialExpires)
	return nil
}

// ensureHostKey makes the host key and keeps it before it is ever sent:
// a key the collector bound but the sensor lost would lock the host out.
func (u *Uplink) ensureHostKey() error {
	if u.id.HostKey != "" {
		return nil
	}
	id := u.id
	id.HostKey = identity.NewHostKey()
	if err := identity.Save(u.o.StateDir, id); err != nil {
		return fmt.Errorf("cannot keep the host key, not enrolling: %w", err)
	}
	u.id = id
	return nil
}

// keep saves what an enrolment or renewal answered.
func (u *Uplink) keep(resp api.EnrollResponse) error {
	keys := resp.CommandKeys
	if u.id.CollectorURL == u.o.URL && len(u.id.CommandKeys) > 0 {
		// Pinned at the first enrolment: a collector (or an impostor with
		// an enrolment token) cannot swap the key that orders this host.
		if !sameKeys(u.id.CommandKeys, resp.CommandKeys) {
			u.o.Log.Warn("the collector presents other kill-switch keys than the ones pinned at first enrolment; keeping the pinned ones (see docs/security-model.md, key rotation)",
				logkey.URL, u.o.URL)
		}
		keys = u.id.CommandKeys
	}
	u.id = identity.Identity{
		HostID: resp.HostID, AgentID: resp.AgentID, Credential: resp.Credential,
		CollectorURL: u.o.URL, EnrolledAt: u.now().UTC(), CredentialExpires: resp.CredentialExpires,
		HostKey: u.id.HostKey, CommandKeys: keys,
	}
	if err := identity.Save(u.o.StateDir, u.id); err != nil {
		return fmt.Errorf("enrolled but could not keep the credential: %w", err)
	}
	return nil
}

func (u *Uplink) now() time.Time {
	if u.Now != nil {
		return u.Now()
	}
	return time.Now()
}

// renewDue reports whether the held credential is in the last third of
// its life, or was issued before host keys (no key, never expires): such
// a host renews once to bind its key, so that no enrolment token can
// claim it.
func renewDue(id identity.Identity, now time.Time) bool {
	if id.HostKey == "" && id.CredentialExpires.IsZero() {
		return true
	}
	if id.CredentialExpires.IsZero() || id.EnrolledAt.IsZero() {
		return false
	}
	life := id.CredentialExpires.Sub(id.EnrolledAt)
	return !now.Before(id.CredentialExpires.Add(-life / 3))
}

// renew trades a credential in the last third of its life for a new one,
// authenticated by the credential itself and the host key (no enrolment
// token needed). A failure is logged and retried after renewRetry; the
// old credential works until it expires.
func (u *Uplink) renew(ctx context.Context) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.now()
	if !u.id.Enrolled(u.o.URL) || !renewDue(u.id, now) || now.Before(u.renewAfter) {
		return
	}
	if err := u.ensureHostKey(); err != nil {
		u.renewAfter = now.Add(renewRetry)
		u.o.Log.Warn("cannot renew the collector credential", logkey.Error, err)
		return
	}
	req := u.o.Request
	req.HostKey = u.id.HostKey
	resp, err := u.o.Client.WithToken(u.id.Credential).Enroll(ctx, req)
	if err == nil {
		err = u.keep(resp)
	}
	if err != nil {
		u.renewAfter = now.Add(renewRetry)
		u.o.Log.Warn("cannot renew the collector credential; retrying in an hour (it works until it expires)",
			logkey.URL, u.o.URL, "credential_expires", u.id.CredentialExpires, logkey.Error, err)
		return
	}
	u.o.Log.Info("renewed the collector credential", logkey.URL, u.o.URL, "credential_expires", resp.CredentialExpires)
}

// do runs call with the credential, enrolling first if needed and once more
// if the collector says it does not know the credential.
func (u *Uplink) do(ctx context.Context, call func(c *client.Client) error) error {
	if err := u.Enroll(ctx, false); err != nil {
		return err
	}
	u.renew(ctx)
	err := call(u.o.Client.WithToken(u.Identity().Credential))
	var he *client.HTTPError
	if errors.As(err, &he) && he.StatusCode == http.StatusUnauthorized {
		if u.o.TokenFile == "" {
			return fmt.Errorf("%w; the collector no longer takes this sensor's credential (expired while offline, or revoked) and no enrolment token is configured: "+
				"give one with --enroll-token (`tillwatch-collector token create --role sensor --uses 1`)", err)
		}
		u.o.Log.Warn("collector no longer knows this sensor's credential; enrolling again", logkey.URL, u.o.URL)
		if eerr := u.Enroll(ctx, true); eerr != nil {
			return errors.Join(err, eerr)
		}
		err = call(u.o.Client.WithToken(u.Identity().Credential))
	}
	return err
}

// SendEvents implements shipper.Sender.
func (u *Uplink) SendEvents(ctx context.Context, ndjson []byte) (api.IngestResponse, error) {
	var resp api.IngestResponse
	err := u.do(ctx, func(c *client.Client) error {
		var err error
		resp, err = c.SendEvents(ctx, ndjson)
		return err
	})
	return resp, err
}

// Heartbeat implements shipper.HeartbeatSender.
func (u *Uplink) Heartbeat(ctx context.Context, hb api.Heartbeat) (api.HeartbeatResponse, error) {
	var resp api.HeartbeatResponse
	err := u.do(ctx, func(c *client.Client) error {
		var err error
		resp, err = c.Heartbeat(ctx, hb)
		return err
	})
	return resp, err
}

// PollCommands implements fleetcmd.Link: a long-poll for kill-switch
// commands addressed to this host.
func (u *Uplink) PollCommands(ctx context.Context, wait time.Duration) ([]killswitch.Signed, error) {
	var out []killswitch.Signed
	err := u.do(ctx, func(c *client.Client) error {
		var err error
		out, err = c.PendingCommands(ctx, wait)
		return err
	})
	return out, err
}

// AckCommand implements fleetcmd.Link.
func (u *Uplink) AckCommand(ctx context.Context, id string, r killswitch.Result) error {
	return u.do(ctx, func(c *client.Client) error { return c.AckCommand(ctx, id, r) })
}

// FetchRules implements rulesync.Fetcher.
func (u *Uplink) FetchRules(ctx context.Context, have int64) ([]byte, error) {
	var out []byte
	err := u.do(ctx, func(c *client.Client) error {
		var err error
		out, err = c.SensorRules(ctx, have)
		return err
	})
	return out, err
}

// CollectorKeys implements fleetcmd.Link: the keys pinned at enrolment.
func (u *Uplink) CollectorKeys() []killswitch.PublicKey { return u.Identity().CommandKeys }

func sameKeys(a, b []killswitch.PublicKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || !a[i].Key.Equal(b[i].Key) {
			return false
		}
	}
	return true
}

// Permanent reports errors that retrying soon will not fix.
func Permanent(err error) bool {
	return errors.Is(err, ErrNotEnrolled) || client.IsPermanent(err)
}
