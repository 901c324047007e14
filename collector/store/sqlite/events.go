// Events: ingest (deduplicated by event.id), alert queries and the
// sensors' sequence tracking.

package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

// Ingest implements store.Store.
func (s *Store) Ingest(ctx context.Context, docs []store.Doc) (int, int, error) {
	if len(docs) == 0 {
		return 0, 0, nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite: ingest: %w", err)
	}
	defer tx.Rollback()
	alertStmt, err := tx.PrepareContext(ctx, `
INSERT OR IGNORE INTO alerts (event_id, ts, host_id, rule_id, rule_ruleset, severity, ingested_at, doc, stopped)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN ?9 THEN `+stoppedExpr("?8")+` ELSE 0 END)`)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite: ingest: %w", err)
	}
	defer alertStmt.Close()
	eventStmt, err := tx.PrepareContext(ctx, `
INSERT OR IGNORE INTO events (event_id, kind, dataset, host_id, ts, ingested_at, doc)
VALUES (?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite: ingest: %w", err)
	}
	defer eventStmt.Close()

	var accepted, dups int
	hosts := map[string]bool{}
	// The rows run without the request's context and check it between
	// them instead: with a context that can end, the driver starts a
	// goroutine per statement to interrupt it, 5% of the collector's CPU
	// at full ingest for one-row inserts that take microseconds.
	rowCtx := context.WithoutCancel(ctx)
	for _, d := range docs {
		if err := ctx.Err(); err != nil {
			return 0, 0, fmt.Errorf("sqlite: ingest: %w", err)
		}
		var res sql.Result
		if d.Kind == event.KindAlert {
			res, err = alertStmt.ExecContext(rowCtx, d.EventID, d.Timestamp.UnixNano(), d.HostID,
				d.RuleID, d.Ruleset, d.Severity, d.Ingested.UnixNano(), string(d.JSON), mayBeStopped(d.JSON))
		} else {
			res, err = eventStmt.ExecContext(rowCtx, d.EventID, d.Kind, d.Dataset, d.HostID,
				d.Timestamp.UnixNano(), d.Ingested.UnixNano(), string(d.JSON))
		}
		if err != nil {
			return 0, 0, fmt.Errorf("sqlite: ingest event %s: %w", d.EventID, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			accepted++
		} else {
			dups++
		}
		if d.Origin == store.OriginSensor {
			hosts[d.HostID] = true
		}
	}
	now := s.now().UnixNano()
	for h := range hosts {
		if _, err := tx.StmtContext(ctx, s.st.lastSeen).ExecContext(ctx, now, h); err != nil {
			return 0, 0, fmt.Errorf("sqlite: ingest: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("sqlite: ingest: %w", err)
	}
	s.c.wrote()
	return accepted, dups, nil
}

// QueryAlerts implements store.Store.
func (s *Store) QueryAlerts(ctx context.Context, f store.AlertFilter) ([]json.RawMessage, error) {
	var (
		where []string
		args  []any
	)
	if !f.Since.IsZero() {
		where = append(where, "ts >= ?")
		args = append(args, f.Since.UnixNano())
	}
	if f.HostID != "" {
		where = append(where, "host_id = ?")
		args = append(args, f.HostID)
	}
	if f.RuleID != "" {
		where = append(where, "rule_id = ?")
		args = append(args, f.RuleID)
	}
	if !f.Until.IsZero() {
		where = append(where, "ts < ?")
		args = append(args, f.Until.UnixNano())
	}
	if len(f.HostIDs) > 0 {
		where = append(where, "host_id IN (SELECT value FROM json_each(?))")
		ids, _ := json.Marshal(f.HostIDs) // []string cannot fail
		args = append(args, string(ids))
	}
	if f.MinSeverity > 0 {
		where = append(where, "severity >= ?")
		args = append(args, f.MinSeverity)
	}
	if f.EventID != "" {
		where = append(where, "event_id = ?")
		args = append(args, f.EventID)
	}
	q := "SELECT doc FROM alerts"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY ts DESC, event_id DESC LIMIT ?"
	args = append(args, f.EffectiveLimit())

	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: query alerts: %w", err)
	}
	defer rows.Close()
	out := []json.RawMessage{}
	for rows.Next() {
		var doc string
		if err := rows.Scan(&doc); err != nil {
			return nil, fmt.Errorf("sqlite: query alerts: %w", err)
		}
		out = append(out, json.RawMessage(doc))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: query alerts: %w", err)
	}
	return out, nil
}

// TrackSequences implements store.SequenceTracker. It runs in a shared
// transaction (groupCommit): every batch of a sequenced fleet tracks its
// numbers, and a transaction of its own per batch cost the single writer a
// commit each.
func (s *Store) TrackSequences(ctx context.Context, hostID string, seqs []int64) ([]store.SequenceGap, error) {
	if len(seqs) == 0 {
		return nil, nil
	}
	var gaps []store.SequenceGap
	err := s.g.do(ctx, func(tx *sql.Tx) error {
		var high int64
		if err := tx.StmtContext(ctx, s.st.seqMax).QueryRowContext(ctx, hostID).Scan(&high); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return store.ErrUnknownHost
			}
			return err
		}
		var lost int64
		gaps, high, lost = store.Gaps(high, seqs)
		_, err := tx.StmtContext(ctx, s.st.setSeqMax).ExecContext(ctx, high, lost, hostID)
		return err
	})
	if errors.Is(err, store.ErrUnknownHost) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: sequences: %w", err)
	}
	return gaps, nil
}
