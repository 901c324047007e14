package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

var _ store.CommandStore = (*Store)(nil)

// CreateCommand implements store.CommandStore.
func (s *Store) CreateCommand(ctx context.Context, rec store.CommandRecord, hosts []string) error {
	signed, err := json.Marshal(rec.Signed)
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: create command: %w", err)
	}
	defer tx.Rollback()
	activated := "0"
	if rec.State == store.CommandActive {
		activated = "(SELECT COALESCE(MAX(activated), 0) + 1 FROM commands)"
	}
	_, err = tx.ExecContext(ctx, `
INSERT INTO commands (id, action, targets, issuer, reason, issued_at, not_after, state, required, signed, activated)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, `+activated+`)`,
		rec.ID, rec.Action, rec.Targets, rec.Issuer, rec.Reason, rec.IssuedAt.UnixNano(), rec.NotAfter.UnixNano(),
		rec.State, rec.Required, string(signed))
	if err != nil {
		return fmt.Errorf("sqlite: create command %s: %w", rec.ID, err)
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO command_hosts (command_id, host_id, state) VALUES (?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("sqlite: create command: %w", err)
	}
	defer stmt.Close()
	for _, h := range hosts {
		if _, err := stmt.ExecContext(ctx, rec.ID, h, store.HostPending); err != nil {
			return fmt.Errorf("sqlite: create command %s: %w", rec.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: create command: %w", err)
	}
	return nil
}

// UpdateCommand implements store.CommandStore.
func (s *Store) UpdateCommand(ctx context.Context, id string, prevSignatures int, signed killswitch.Signed, state string) error {
	b, err := json.Marshal(signed)
	if err != nil {
		return err
	}
	// One conditional statement on the single writer connection: the
	// count check and the write cannot be split by another approval.
	res, err := s.w.ExecContext(ctx, `
UPDATE commands SET signed = ?, state = ?,
	activated = CASE WHEN ? = 'active' AND activated = 0
		THEN (SELECT COALESCE(MAX(activated), 0) + 1 FROM commands) ELSE activated END
WHERE id = ? AND COALESCE(json_array_length(signed, '$.signatures'), 0) = ?`, string(b), state, state, id, prevSignatures)
	if err != nil {
		return fmt.Errorf("sqlite: update command %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	var one int
	err = s.w.QueryRowContext(ctx, `SELECT 1 FROM commands WHERE id = ?`, id).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.ErrUnknownCommand
	case err != nil:
		return fmt.Errorf("sqlite: update command %s: %w", id, err)
	}
	return store.ErrCommandConflict
}

const commandColumns = `id, action, targets, issuer, reason, issued_at, not_after, state, required, signed`

func scanCommand(sc interface{ Scan(...any) error }) (store.CommandRecord, error) {
	var r store.CommandRecord
	var issued, notAfter int64
	var signed string
	if err := sc.Scan(&r.ID, &r.Action, &r.Targets, &r.Issuer, &r.Reason, &issued, &notAfter, &r.State, &r.Required, &signed); err != nil {
		return r, err
	}
	r.IssuedAt = time.Unix(0, issued).UTC()
	r.NotAfter = time.Unix(0, notAfter).UTC()
	if err := json.Unmarshal([]byte(signed), &r.Signed); err != nil {
		return r, fmt.Errorf("command %s: stored envelope: %w", r.ID, err)
	}
	return r, nil
}

// Command implements store.CommandStore.
func (s *Store) Command(ctx context.Context, id string) (store.CommandRecord, []store.CommandHost, error) {
	rec, err := scanCommand(s.r.QueryRowContext(ctx, `SELECT `+commandColumns+` FROM commands WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return rec, nil, store.ErrUnknownCommand
	}
	if err != nil {
		return rec, nil, fmt.Errorf("sqlite: command %s: %w", id, err)
	}
	rows, err := s.r.QueryContext(ctx, `
SELECT host_id, state, delivered_at, acked_at, result FROM command_hosts WHERE command_id = ? ORDER BY host_id`, id)
	if err != nil {
		return rec, nil, fmt.Errorf("sqlite: command %s: %w", id, err)
	}
	defer rows.Close()
	var hosts []store.CommandHost
	for rows.Next() {
		h, err := scanCommandHost(rows)
		if err != nil {
			return rec, nil, fmt.Errorf("sqlite: command %s: %w", id, err)
		}
		hosts = append(hosts, h)
	}
	return rec, hosts, rows.Err()
}

// scanCommandHost reads host_id, state, delivered_at, acked_at, result
// and then any further columns into extra.
func scanCommandHost(rows *sql.Rows, extra ...any) (store.CommandHost, error) {
	var h store.CommandHost
	var delivered, acked sql.NullInt64
	var result sql.NullString
	if err := rows.Scan(append([]any{&h.HostID, &h.State, &delivered, &acked, &result}, extra...)...); err != nil {
		return h, err
	}
	if delivered.Valid {
		h.DeliveredAt = time.Unix(0, delivered.Int64).UTC()
	}
	if acked.Valid {
		h.AckedAt = time.Unix(0, acked.Int64).UTC()
	}
	if result.Valid {
		var r killswitch.Result
		if err := json.Unmarshal([]byte(result.String), &r); err == nil {
			h.Result = &r
		}
	}
	return h, nil
}

// CommandHosts implements store.Overview.
func (s *Store) CommandHosts(ctx context.Context, ids []string, hostID string) (map[string][]store.CommandHost, error) {
	out := map[string][]store.CommandHost{}
	if len(ids) == 0 {
		return out, nil
	}
	list, _ := json.Marshal(ids) // []string cannot fail
	q := `SELECT host_id, state, delivered_at, acked_at, result, command_id FROM command_hosts
WHERE command_id IN (SELECT value FROM json_each(?))`
	args := []any{string(list)}
	if hostID != "" {
		q += ` AND host_id = ?`
		args = append(args, hostID)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY command_id, host_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: command hosts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		h, err := scanCommandHost(rows, &id)
		if err != nil {
			return nil, fmt.Errorf("sqlite: command hosts: %w", err)
		}
		out[id] = append(out[id], h)
	}
	return out, rows.Err()
}

// Commands implements store.CommandStore.
func (s *Store) Commands(ctx context.Context, limit int) ([]store.CommandRecord, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+commandColumns+` FROM commands ORDER BY seq DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: commands: %w", err)
	}
	defer rows.Close()
	var out []store.CommandRecord
	for rows.Next() {
		r, err := scanCommand(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: commands: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// PendingCommands implements store.CommandStore. The lookup runs on the
// read pool, so a fleet of idle long-polls never queues on the writer;
// only a host that has something pending takes a write.
func (s *Store) PendingCommands(ctx context.Context, hostID string, now time.Time) ([]killswitch.Signed, error) {
	rows, err := s.st.pending.QueryContext(ctx, hostID, now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("sqlite: pending commands: %w", err)
	}
	defer rows.Close()
	var out []killswitch.Signed
	var fresh []string
	for rows.Next() {
		var id, signed, state string
		if err := rows.Scan(&id, &signed, &state); err != nil {
			return nil, fmt.Errorf("sqlite: pending commands: %w", err)
		}
		var sg killswitch.Signed
		if err := json.Unmarshal([]byte(signed), &sg); err != nil {
			return nil, fmt.Errorf("sqlite: command %s: stored envelope: %w", id, err)
		}
		out = append(out, sg)
		if state == store.HostPending {
			fresh = append(fresh, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: pending commands: %w", err)
	}
	rows.Close()
	if len(fresh) > 0 {
		err := s.g.do(ctx, func(tx *sql.Tx) error {
			mark := tx.StmtContext(ctx, s.st.delivered)
			for _, id := range fresh {
				if _, err := mark.ExecContext(ctx, now.UnixNano(), hostID, id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("sqlite: mark delivered: %w", err)
		}
	}
	return out, nil
}

// PendingCommandsFor implements store.CommandStore: one read of every
// host's open deliveries, the answer, then one write transaction marking
// the fresh ones delivered.
func (s *Store) PendingCommandsFor(ctx context.Context, hostIDs []string, now time.Time, answer func(map[string][]killswitch.Signed)) (map[string][]killswitch.Signed, error) {
	if len(hostIDs) == 0 {
		if answer != nil {
			answer(nil)
		}
		return nil, nil
	}
	hosts, err := json.Marshal(hostIDs)
	if err != nil {
		return nil, err
	}
	rows, err := s.st.pendingFor.QueryContext(ctx, string(hosts), now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("sqlite: pending commands: %w", err)
	}
	defer rows.Close()
	out := map[string][]killswitch.Signed{}
	envelopes := map[string]killswitch.Signed{} // by command id: decoded once
	type mark struct{ host, id string }
	var fresh []mark
	for rows.Next() {
		var host, id, signed, state string
		if err := rows.Scan(&host, &id, &signed, &state); err != nil {
			return nil, fmt.Errorf("sqlite: pending commands: %w", err)
		}
		sg, ok := envelopes[id]
		if !ok {
			if err := json.Unmarshal([]byte(signed), &sg); err != nil {
				return nil, fmt.Errorf("sqlite: command %s: stored envelope: %w", id, err)
			}
			envelopes[id] = sg
		}
		out[host] = append(out[host], sg)
		if state == store.HostPending {
			fresh = append(fresh, mark{host, id})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: pending commands: %w", err)
	}
	rows.Close()
	if answer != nil {
		answer(out)
	}
	if len(fresh) > 0 {
		err := s.g.do(ctx, func(tx *sql.Tx) error {
			stmt := tx.StmtContext(ctx, s.st.delivered)
			for _, m := range fresh {
				if _, err := stmt.ExecContext(ctx, now.UnixNano(), m.host, m.id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("sqlite: mark delivered: %w", err)
		}
	}
	return out, nil
}

// AckCommand implements store.CommandStore.
func (s *Store) AckCommand(ctx context.Context, id, hostID string, r killswitch.Result, at time.Time) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	var n int64
	err = s.g.do(ctx, func(tx *sql.Tx) error {
		res, err := tx.StmtContext(ctx, s.st.ack).ExecContext(ctx, at.UnixNano(), string(b), at.UnixNano(), id, hostID)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: ack command %s: %w", id, err)
	}
	if n == 0 {
		return store.ErrUnknownCommand
	}
	return nil
}

// CommandsGeneration implements store.CommandStore.
func (s *Store) CommandsGeneration(ctx context.Context) (int64, error) {
	var g int64
	if err := s.st.generation.QueryRowContext(ctx).Scan(&g); err != nil {
		return 0, fmt.Errorf("sqlite: commands generation: %w", err)
	}
	return g, nil
}
