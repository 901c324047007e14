// Package store defines what the collector's server needs from a backend:
// credentials, enrolled hosts, and the alert and telemetry documents sensors
// send. Backends (sqlite today, Elasticsearch later) live in sub-packages and
// are chosen by the collector's wiring, never by the server.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
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
	// credentials to a host and must be empty for other roles.
	CreateToken(ctx context.Context, role, hostID string) (string, error)

	// Authenticate maps a plaintext token to its role and, for agent
	// credentials, host. Unknown, revoked and expired tokens return
	// ErrUnknownToken.
	Authenticate(ctx context.Context, token string) (role, hostID string, err error)

	// Enroll records the host (creating or updating it) and issues its agent
	// credential. Re-enrolling a host_id revokes its previous credential and
	// keeps its agent id.
	Enroll(ctx context.Context, req api.EnrollRequest) (api.EnrollResponse, error)

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
	JSON      []byte    // the full document as stored and returned
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
	ErrUnknownHost  = errors.New("host not enrolled")
	ErrInvalidRole  = errors.New("invalid role")
)
