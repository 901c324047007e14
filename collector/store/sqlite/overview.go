package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

var _ store.Overview = (*Store)(nil)

const (
	// Driven by the hosts table (in host_id order): one seek per host
	// into alerts_tally, then that host's window.
	sqlAlertTally = `
SELECT h.host_id, COUNT(*), SUM(a.stopped = 0)
FROM hosts h JOIN alerts a INDEXED BY alerts_tally ON a.host_id = h.host_id AND a.ts >= ? AND a.rule_ruleset <> ?
GROUP BY h.host_id`
	sqlHealthEvents = `SELECT doc FROM events WHERE host_id = ? AND ` + healthWhere + ` ORDER BY ts DESC, event_id DESC LIMIT ?`
)

// AlertTally implements store.Overview from the covering index
// alerts_tally, no document read. Only enrolled hosts are counted: alerts
// are stored for hosts that enrolled.
func (s *Store) AlertTally(ctx context.Context, since time.Time) (map[string]store.AlertTally, error) {
	rows, err := s.r.QueryContext(ctx, sqlAlertTally, since.UnixNano(), event.RulesetIntegrity)
	if err != nil {
		return nil, fmt.Errorf("sqlite: alert tally: %w", err)
	}
	defer rows.Close()
	out := map[string]store.AlertTally{}
	for rows.Next() {
		var (
			host string
			t    store.AlertTally
		)
		if err := rows.Scan(&host, &t.Alerts, &t.Unstopped); err != nil {
			return nil, fmt.Errorf("sqlite: alert tally: %w", err)
		}
		out[host] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: alert tally: %w", err)
	}
	return out, nil
}

// HealthEvents implements store.Overview from the partial index
// events_health.
func (s *Store) HealthEvents(ctx context.Context, hostID string, limit int) ([]json.RawMessage, error) {
	rows, err := s.r.QueryContext(ctx, sqlHealthEvents, hostID, max(limit, 0))
	if err != nil {
		return nil, fmt.Errorf("sqlite: health events: %w", err)
	}
	defer rows.Close()
	out := []json.RawMessage{}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, fmt.Errorf("sqlite: health events: %w", err)
		}
		out = append(out, json.RawMessage(doc))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: health events: %w", err)
	}
	return out, nil
}
