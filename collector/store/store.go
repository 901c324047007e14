// Package store defines what the collector's server needs from a backend:
// credentials, enrolled hosts, and the alert and telemetry documents sensors
// send. Backends (sqlite, elasticsearch, and spooled around the latter) live in sub-packages and
// are chosen by the collector's wiring, never by the server.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/internal/event"
)

// Store is the collector's persistence.
//
// Contract:
//   - All methods are safe for concurrent use by many goroutines; the backend
//     serialises writes itself, so a caller never sees a "database busy" error
//     under normal load.
//   - Every method honours ctx cancellation and deadlines.
//   - Whoever opened the Store closes it, after the server has stopped; Close
//     waits for nothing and calls after Close return errors.
//   - Plaintext tokens never reach persistent storage; backends keep a hash.
type Store interface {
	// CreateToken issues a new random token of role and returns its
	// plaintext, the only time it is ever visible. hostID binds agent
	// credentials to a host (required) and may bind an enrolment token to
	// the one host it may enrol (optional); other roles have none. The
	// token stops working at expires (by the store's clock); the zero time
	// means it never expires. maxUses bounds the enrolments an enrolment
	// token may make (0: no bound).
	CreateToken(ctx context.Context, role, hostID string, expires time.Time, maxUses int) (string, error)

	// Authenticate maps a plaintext token to its role and host (agent
	// credentials and host-specific enrolment tokens). Unknown and revoked
	// tokens return ErrUnknownToken; an expired one returns a
	// *TokenExpiredError, which matches ErrTokenExpired; an enrolment
	// token with no uses left returns ErrTokenUsedUp.
	Authenticate(ctx context.Context, token string) (role, hostID string, err error)

	// Enroll records the host (creating or updating it) and issues its agent
	// credential. Re-enrolling a host_id revokes its previous credential and
	// keeps its agent id.
	//
	// A host is bound to the host key of its first enrolment (its hash is
	// kept): a later enrolment of that host id with another key returns
	// ErrHostKeyMismatch and changes nothing, unless by allows a rebind.
	// When by.TokenHash names an enrolment token, one of its uses is
	// counted first (ErrTokenUsedUp when none is left); a refused
	// enrolment still used it.
	Enroll(ctx context.Context, req api.EnrollRequest, by Enroller) (api.EnrollResponse, error)

	// Tokens lists every token (never a secret), oldest first.
	Tokens(ctx context.Context) ([]TokenInfo, error)

	// RevokeToken revokes the token whose TokenInfo.ID is id;
	// ErrUnknownToken if none is.
	RevokeToken(ctx context.Context, id string) error

	// Ingest stores docs in one transaction. A doc whose EventID is already
	// stored (in this or an earlier batch) is counted as a duplicate and not
	// stored again. Ingest also marks the docs' hosts as seen.
	Ingest(ctx context.Context, docs []Doc) (accepted, duplicates int, err error)

	// Heartbeat updates a host's last_seen, health, version and mode.
	// Returns ErrUnknownHost if hostID was never enrolled.
	Heartbeat(ctx context.Context, hostID string, hb api.Heartbeat) error

	// QueryAlerts returns the stored alert documents matching f, newest
	// @timestamp first.
	QueryAlerts(ctx context.Context, f AlertFilter) ([]json.RawMessage, error)

	// Hosts lists every enrolled host with its alert count, by host_id.
	Hosts(ctx context.Context) ([]api.Host, error)

	// Ping reports whether the backend answers (used by /healthz).
	Ping(ctx context.Context) error

	// Close releases the backend.
	Close() error
}

// Enroller says how an enrolment was authenticated.
type Enroller struct {
	// TokenHash is HashToken of the enrolment token presented; Enroll
	// counts one of its uses. Empty when no enrolment token was used (a
	// renewal, or a tool calling the store directly).
	TokenHash string
	// Rebind lets the request bind a new host key to an existing host:
	// the token was made by an operator for this one host (a reinstalled
	// till).
	Rebind bool
	// Renewal means the request carried the host's own current agent
	// credential: it may bind a first key to a host enrolled before host
	// keys existed, and must present the bound key otherwise.
	Renewal bool
	// CredentialExpires is when the issued credential stops working; zero
	// means never.
	CredentialExpires time.Time
}

// TokenInfo describes a token without its secret.
type TokenInfo struct {
	ID        string    `json:"id"` // TokenID of its hash
	Role      string    `json:"role"`
	HostID    string    `json:"host_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: never
	Uses      int       `json:"uses"`
	MaxUses   int       `json:"max_uses,omitempty"` // 0: no bound
	Revoked   bool      `json:"revoked,omitempty"`
}

// TokenIDLen is how many hex digits of a token's hash name it in listings,
// audit records and `token revoke`: 48 bits, unique in any real store and
// useless for finding the token.
const TokenIDLen = 12

// TokenID names a token by its hash.
func TokenID(hash string) string { return hash[:min(TokenIDLen, len(hash))] }

// Doc is one validated event document ready to store.
type Doc struct {
	EventID   string
	Kind      string // event.kind; "alert" goes to the alerts table
	Dataset   string // event.dataset, may be empty
	HostID    string
	Timestamp time.Time // @timestamp
	Ingested  time.Time // event.ingested, set by the collector
	RuleID    string    // alerts only
	Ruleset   string    // alerts only
	Severity  int       // event.severity, 0 when absent
	Sequence  int64     // event.sequence, 0 when absent
	JSON      []byte    // the full document as stored and returned
	// Origin is OriginSensor for what a sensor sent (it also marks the
	// host as heard from) and OriginCollector for alerts the collector
	// raises about a host (which must not make a silent host look alive).
	Origin string
}

// Doc origins.
const (
	OriginSensor    = ""
	OriginCollector = "collector"
)

// SequenceTracker is implemented by stores that keep, per host, the highest
// event.sequence received, so the collector can tell that a sensor lost
// events. The server uses it when the store has it. Safe for concurrent
// use; state lives in the store, so every collector on one store agrees.
type SequenceTracker interface {
	// TrackSequences records the sequence numbers of one batch from
	// hostID, in the order sent, and returns the gaps it reveals. A sensor
	// sends in sequence order, so a number past the highest seen plus one
	// means the numbers between were lost; numbers at or below it are
	// redeliveries. A batch starting again at 1 is a sensor whose spool was
	// reset: tracking restarts without a gap.
	TrackSequences(ctx context.Context, hostID string, seqs []int64) ([]SequenceGap, error)
}

// SequenceGap is a run of sequence numbers that never arrived.
type SequenceGap struct {
	From, To int64 // inclusive
}

// Alert limits for QueryAlerts.
const (
	DefaultAlertLimit = 100
	MaxAlertLimit     = 10000
)

// AlertFilter selects alerts. Zero fields do not filter.
type AlertFilter struct {
	Since  time.Time // @timestamp >= Since
	HostID string
	RuleID string
	Limit  int // 0 means DefaultAlertLimit; capped at MaxAlertLimit
	// Until keeps @timestamp < Until: the console pages newest first by
	// asking again with the oldest timestamp it was given.
	Until time.Time
	// HostIDs keeps alerts of any of these hosts (a store's tills); an
	// empty list does not filter. Combined with HostID, both must match.
	HostIDs []string
	// MinSeverity keeps event.severity >= MinSeverity.
	MinSeverity int
	// EventID keeps the one alert with that event.id.
	EventID string
}

// EffectiveLimit applies the default and the cap.
func (f AlertFilter) EffectiveLimit() int {
	switch {
	case f.Limit <= 0:
		return DefaultAlertLimit
	case f.Limit > MaxAlertLimit:
		return MaxAlertLimit
	}
	return f.Limit
}

// Errors callers branch on.
var (
	ErrUnknownToken = errors.New("unknown token")
	ErrTokenExpired = errors.New("token expired")
	ErrUnknownHost  = errors.New("host not enrolled")
	ErrInvalidRole  = errors.New("invalid role")
	ErrTokenUsedUp  = errors.New("enrolment token used up")
	// ErrHostKeyMismatch is an enrolment of an existing host id with
	// another host key than the one it is bound to: another machine
	// claiming to be this host.
	ErrHostKeyMismatch = errors.New("host is enrolled with another host key")
)

// TokenExpiredError is what Authenticate returns for a token past its
// expiry; errors.Is(err, ErrTokenExpired) matches it.
type TokenExpiredError struct {
	At time.Time // when the token expired
}

func (e *TokenExpiredError) Error() string {
	return "token expired at " + e.At.UTC().Format(time.RFC3339)
}

// Is makes the error match ErrTokenExpired.
func (e *TokenExpiredError) Is(target error) bool { return target == ErrTokenExpired }

// Gaps applies a batch's sequence numbers to the highest seen so far and
// returns the gaps, the new highest and how many numbers were lost. It is
// the one definition every SequenceTracker uses.
func Gaps(high int64, seqs []int64) (gaps []SequenceGap, newHigh, lost int64) {
	for i, q := range seqs {
		switch {
		case q <= 0:
			continue // not sequenced (an older sensor)
		case i == 0 && q == 1 && high > 1:
			high = 1 // the sensor's spool was reset: start again, no gap
		case q > high+1 && high > 0:
			gaps = append(gaps, SequenceGap{From: high + 1, To: q - 1})
			lost += q - high - 1
			high = q
		case q > high:
			high = q
		}
	}
	return gaps, high, lost
}

// Overview is implemented by stores that answer the console's fleet-wide
// questions with one aggregate query each instead of documents read one by
// one: what a page over a thousand tills and a hundred thousand alerts
// needs to answer within a second.
type Overview interface {
	// AlertTally counts, per host, the attack alerts (every ruleset but
	// integrity, whose alerts are about the sensor itself) with @timestamp
	// >= since, and how many of them the sensor did not stop (see
	// Stopped). Hosts without such alerts are absent, and so may be hosts
	// that are not enrolled (SQLite counts from the hosts it knows).
	AlertTally(ctx context.Context, since time.Time) (map[string]AlertTally, error)

	// HealthEvents returns hostID's health documents (event.kind "state"
	// or event.dataset "tillwatch.health": a sensor component changing
	// state), newest @timestamp first, at most limit.
	HealthEvents(ctx context.Context, hostID string, limit int) ([]json.RawMessage, error)

	// HostList is Hosts without AlertCount (zero): the pages that need
	// every host but not how many alerts each has stored, without
	// counting every alert ever stored on each load.
	HostList(ctx context.Context) ([]api.Host, error)

	// Host is one host as Hosts lists it, with its alert count, read by
	// its id (the host page): ErrUnknownHost if it was never enrolled.
	Host(ctx context.Context, hostID string) (api.Host, error)

	// CommandHosts returns the hosts of each kill-switch command in ids,
	// as CommandStore.Command does for one, by command id and then host
	// id; with hostID set, only that host's. One query for a page that
	// would otherwise ask once per command.
	CommandHosts(ctx context.Context, ids []string, hostID string) (map[string][]CommandHost, error)
}

// AlertTally is one host's attack alerts in a window.
type AlertTally struct {
	Alerts    int // attack alerts
	Unstopped int // of which the sensor did not stop
}

// StoppingActions are the sensor responses (tillwatch.response.action)
// that end an attack on the till when their result is "ok". An alert is
// stopped when its response is one of them with result "ok", or when the
// file guard stopped processes synchronously (tillwatch.ransomware.stopped
// is not empty). Each backend evaluates this in its own query language;
// the shared suite (storetest) checks that they agree.
var StoppingActions = []string{event.ActionKill, event.ActionSuspend, event.ActionQuarantine, event.ActionDisableRMM, event.ActionIsolate}
