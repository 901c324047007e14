// Hosts: enrolment, heartbeats and the host list.

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
)

func marshalMap(m map[string]string) string {
	if m == nil {
		return "{}"
	}
	b, _ := json.Marshal(m) // map[string]string always marshals
	return string(b)
}

// Enroll implements store.Store.
func (s *Store) Enroll(ctx context.Context, req api.EnrollRequest, by store.Enroller) (api.EnrollResponse, error) {
	if req.HostID == "" {
		return api.EnrollResponse{}, errors.New("sqlite: enroll: empty host id")
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return api.EnrollResponse{}, fmt.Errorf("sqlite: enroll: %w", err)
	}
	defer tx.Rollback()

	if by.TokenHash != "" {
		// Counted in the enrolment's transaction: concurrent enrolments
		// cannot overrun the bound.
		res, err := tx.ExecContext(ctx,
			`UPDATE tokens SET uses = uses + 1 WHERE hash = ? AND (max_uses = 0 OR uses < max_uses)`, by.TokenHash)
		if err != nil {
			return api.EnrollResponse{}, fmt.Errorf("sqlite: enroll: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return api.EnrollResponse{}, store.ErrTokenUsedUp
		}
	}
	var bound string
	err = tx.QueryRowContext(ctx, `SELECT key_hash FROM hosts WHERE host_id = ?`, req.HostID).Scan(&bound)
	exists := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return api.EnrollResponse{}, fmt.Errorf("sqlite: enroll: %w", err)
	}
	keyHash, err := store.BindKey(exists, bound, req.HostKey, by)
	if err != nil {
		// The use counted above stays counted: a refused claim burns it.
		if cerr := tx.Commit(); cerr != nil {
			return api.EnrollResponse{}, fmt.Errorf("sqlite: enroll: %w", cerr)
		}
		return api.EnrollResponse{}, err
	}

	now := s.now().UnixNano()
	agentID := store.NewAgentID()
	// Keep the agent id across re-enrolment: it is what alerts already
	// stored carry in agent.id.
	err = tx.QueryRowContext(ctx, `
INSERT INTO hosts (host_id, host_name, agent_id, agent_version, os, labels, enrolled_at, last_seen, key_hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (host_id) DO UPDATE SET
	host_name = excluded.host_name,
	agent_version = excluded.agent_version,
	os = excluded.os,
	labels = excluded.labels,
	enrolled_at = excluded.enrolled_at,
	last_seen = excluded.last_seen,
	key_hash = excluded.key_hash
RETURNING agent_id`,
		req.HostID, req.HostName, agentID, req.AgentVersion, req.OS, marshalMap(req.Labels), now, now, keyHash).Scan(&agentID)
	if err != nil {
		return api.EnrollResponse{}, fmt.Errorf("sqlite: enroll: %w", err)
	}
	// Revoke (not delete) so the token table remains an audit trail.
	if _, err := tx.ExecContext(ctx,
		`UPDATE tokens SET revoked = 1 WHERE role = 'agent' AND host_id = ? AND revoked = 0`, req.HostID); err != nil {
		return api.EnrollResponse{}, fmt.Errorf("sqlite: enroll: %w", err)
	}
	tok, err := s.insertToken(ctx, tx, api.RoleAgent, req.HostID, by.CredentialExpires, 0)
	if err != nil {
		return api.EnrollResponse{}, err
	}
	if err := tx.Commit(); err != nil {
		return api.EnrollResponse{}, fmt.Errorf("sqlite: enroll: %w", err)
	}
	s.creds.Forget() // the host's previous credential is revoked
	return api.EnrollResponse{AgentID: agentID, HostID: req.HostID, Credential: tok, CredentialExpires: by.CredentialExpires}, nil
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, hostID string, hb api.Heartbeat) error {
	res, err := s.st.heartbeat.ExecContext(ctx,
		s.now().UnixNano(), marshalMap(hb.Health),
		hb.AgentVersion, hb.AgentVersion, hb.Mode, hb.Mode, hb.HostName, hb.HostName,
		hb.ConfigVersion, hb.ConfigVersion, hb.RulesVersion, hb.RulesVersion, hostID)
	if err != nil {
		return fmt.Errorf("sqlite: heartbeat: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return store.ErrUnknownHost
	}
	return nil
}

// Hosts implements store.Store.
func (s *Store) Hosts(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, alertCountSQL, "")
}

// alertCountSQL counts a host's stored alerts.
const alertCountSQL = "(SELECT COUNT(*) FROM alerts a WHERE a.host_id = h.host_id)"

// HostList implements store.Overview.
func (s *Store) HostList(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, "0", "")
}

// Host implements store.Overview.
func (s *Store) Host(ctx context.Context, hostID string) (api.Host, error) {
	hs, err := s.hosts(ctx, alertCountSQL, hostID)
	if err != nil {
		return api.Host{}, err
	}
	if len(hs) == 0 {
		return api.Host{}, store.ErrUnknownHost
	}
	return hs[0], nil
}

// hosts lists the hosts with count (an SQL expression) as AlertCount: all
// of them, or with only set, that one.
func (s *Store) hosts(ctx context.Context, count, only string) ([]api.Host, error) {
	where, args := "", []any{}
	if only != "" {
		where, args = "WHERE h.host_id = ?", append(args, only)
	}
	rows, err := s.r.QueryContext(ctx, `
SELECT h.host_id, h.host_name, h.agent_id, h.agent_version, h.os, h.labels, h.mode, h.health,
       h.enrolled_at, h.last_seen, h.seq_max, h.events_lost, h.config_version, h.rules_version,
       `+count+`
FROM hosts h `+where+` ORDER BY h.host_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: hosts: %w", err)
	}
	defer rows.Close()
	out := []api.Host{}
	for rows.Next() {
		var (
			h              api.Host
			labels, health string
			enrolled, seen int64
		)
		if err := rows.Scan(&h.HostID, &h.HostName, &h.AgentID, &h.AgentVersion, &h.OS, &labels, &h.Mode,
			&health, &enrolled, &seen, &h.LastSequence, &h.EventsLost, &h.ConfigVersion, &h.RulesVersion,
			&h.AlertCount); err != nil {
			return nil, fmt.Errorf("sqlite: hosts: %w", err)
		}
		if err := unmarshalMap(labels, &h.Labels); err != nil {
			return nil, fmt.Errorf("sqlite: host %s labels: %w", h.HostID, err)
		}
		if err := unmarshalMap(health, &h.Health); err != nil {
			return nil, fmt.Errorf("sqlite: host %s health: %w", h.HostID, err)
		}
		h.EnrolledAt = time.Unix(0, enrolled).UTC()
		h.LastSeen = time.Unix(0, seen).UTC()
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: hosts: %w", err)
	}
	return out, nil
}

func unmarshalMap(s string, dst *map[string]string) error {
	if err := json.Unmarshal([]byte(s), dst); err != nil {
		return err
	}
	if len(*dst) == 0 {
		*dst = nil // omitted on the wire rather than "{}"
	}
	return nil
}
