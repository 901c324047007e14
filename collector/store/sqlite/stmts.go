package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Statements every sensor request runs. A statement given as text is
// parsed and planned by SQLite on each call; prepared once here, the
// driver keeps it compiled per connection. Parsing was 18% of the
// collector's CPU when 10,000 sensors polled and acknowledged a kill-switch
// at once (bench/fanoutbench).
const (
	sqlAuthenticate = `SELECT hash, role, host_id, expires_at, revoked, uses, max_uses FROM tokens WHERE hash = ?`
	sqlPending      = `
SELECT c.id, c.signed, h.state FROM command_hosts h JOIN commands c ON c.id = h.command_id
WHERE h.host_id = ? AND h.state != 'acked' AND c.state = 'active' AND c.not_after > ?
ORDER BY c.seq`
	// sqlPendingFor is sqlPending for the hosts of a JSON array (one
	// parameter, however many hosts): each is looked up in the
	// command_hosts_open index.
	sqlPendingFor = `
SELECT h.host_id, c.id, c.signed, h.state FROM command_hosts h JOIN commands c ON c.id = h.command_id
WHERE h.host_id IN (SELECT value FROM json_each(?)) AND h.state != 'acked' AND c.state = 'active' AND c.not_after > ?
ORDER BY c.seq`
	sqlGeneration = `SELECT COALESCE(MAX(activated), 0) FROM commands`
	sqlCredGen    = `SELECT value FROM generations WHERE name = 'credentials'`
	sqlHeartbeat  = `
UPDATE hosts SET
	last_seen = ?,
	health = ?,
	agent_version = CASE WHEN ? <> '' THEN ? ELSE agent_version END,
	mode = CASE WHEN ? <> '' THEN ? ELSE mode END,
	host_name = CASE WHEN ? <> '' THEN ? ELSE host_name END,
	config_version = CASE WHEN ? <> '' THEN ? ELSE config_version END,
	rules_version = CASE WHEN ? <> '' THEN ? ELSE rules_version END
WHERE host_id = ?`
	sqlAck = `
UPDATE command_hosts SET state = 'acked', acked_at = ?, result = ?,
	delivered_at = COALESCE(delivered_at, ?)
WHERE command_id = ? AND host_id = ?`
	sqlDelivered = `
UPDATE command_hosts SET state = 'delivered', delivered_at = ?
WHERE host_id = ? AND state = 'pending' AND command_id = ?`
	sqlLastSeen  = `UPDATE hosts SET last_seen = max(last_seen, ?) WHERE host_id = ?`
	sqlSeqMax    = `SELECT seq_max FROM hosts WHERE host_id = ?`
	sqlSetSeqMax = `UPDATE hosts SET seq_max = ?, events_lost = events_lost + ? WHERE host_id = ?`
)

// stmts are the prepared statements; the readers' run on the read pool,
// the writers' on the writer connection (in a transaction through
// Tx.StmtContext, which reuses the writer's compiled statement).
type stmts struct {
	authenticate, pending, generation *sql.Stmt // readers
	credGen                           *sql.Stmt // reader
	pendingFor                        *sql.Stmt // reader
	heartbeat, ack, delivered         *sql.Stmt // writer
	lastSeen, seqMax, setSeqMax       *sql.Stmt // writer

	all []*sql.Stmt // every one prepared, for close
}

func prepareStmts(ctx context.Context, r, w *sql.DB) (*stmts, error) {
	st := &stmts{}
	for _, p := range []struct {
		db  *sql.DB
		sql string
		dst **sql.Stmt
	}{
		{r, sqlAuthenticate, &st.authenticate},
		{r, sqlPending, &st.pending},
		{r, sqlPendingFor, &st.pendingFor},
		{r, sqlGeneration, &st.generation},
		{r, sqlCredGen, &st.credGen},
		{w, sqlHeartbeat, &st.heartbeat},
		{w, sqlAck, &st.ack},
		{w, sqlDelivered, &st.delivered},
		{w, sqlLastSeen, &st.lastSeen},
		{w, sqlSeqMax, &st.seqMax},
		{w, sqlSetSeqMax, &st.setSeqMax},
	} {
		s, err := p.db.PrepareContext(ctx, p.sql)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("sqlite: prepare: %w", err)
		}
		*p.dst = s
		st.all = append(st.all, s)
	}
	return st, nil
}

func (st *stmts) close() error {
	var errs []error
	for _, s := range st.all {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
