// Long (660 lines) on purpose: the Store methods on the shared tables; commands, statements, group commit and checkpoints are split out already.

// Package sqlite is the collector's embedded store: one SQLite database file
// (pure Go, modernc.org/sqlite) in WAL mode. Writes go through a single
// connection so concurrent ingest queues in Go instead of failing with
// SQLITE_BUSY; reads use a small pool that WAL lets run beside the writer.
package sqlite

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

// TokenPrefix starts every token (store.TokenPrefix).
const TokenPrefix = store.TokenPrefix

// busyTimeout covers other processes (tillwatch-collector token create)
// writing while the collector runs; within this process writes never wait
// on SQLite's lock because they share one connection.
const busyTimeout = 10 * time.Second

// Options tunes Open. The zero value is usable.
type Options struct {
	// Now is the clock for created_at, enrolled_at and last_seen; nil means
	// time.Now.
	Now func() time.Time
	// Readers is the size of the read pool; 0 means 4.
	Readers int
	// Logger receives the store's warnings; nil means slog.Default().
	Logger *slog.Logger
}

// Store implements store.Store on a SQLite file.
type Store struct {
	w   *sql.DB // exactly one connection: the writer
	r   *sql.DB // readers (query_only)
	g   *groupCommit
	c   *checkpointer
	st  *stmts
	now func() time.Time
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates its
// schema to the current version.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	readers := opts.Readers
	if readers <= 0 {
		readers = 4
	}
	s := &Store{now: now}
	if err := s.openWriter(abs); err != nil {
		return nil, err
	}
	r, err := sql.Open("sqlite", dsn(abs, connReader))
	if err != nil {
		s.w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	s.r = r
	c, err := sql.Open("sqlite", dsn(abs, connCheckpointer))
	if err != nil {
		s.w.Close()
		s.r.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	c.SetMaxOpenConns(1)
	c.SetMaxIdleConns(1)
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	st, err := prepareStmts(context.Background(), s.r, s.w)
	if err != nil {
		c.Close()
		s.r.Close()
		s.w.Close()
		return nil, err
	}
	s.st = st
	s.c = newCheckpointer(c, log)
	s.g = newGroupCommit(s.w)
	return s, nil
}

// openWriter opens the single writer connection and migrates the schema.
// SQLite answers SQLITE_BUSY without waiting on busy_timeout in a few
// first-open races (two connections switching a brand-new file to WAL, or
// one reading while another runs WAL recovery: SQLite refuses rather than
// risk a deadlock), so a busy first open is retried from scratch until
// busyTimeout has passed; every other error is final.
func (s *Store) openWriter(abs string) error {
	deadline := time.Now().Add(busyTimeout)
	for attempt := 1; ; attempt++ {
		w, err := sql.Open("sqlite", dsn(abs, connWriter))
		if err != nil {
			return fmt.Errorf("sqlite: open %s: %w", abs, err)
		}
		w.SetMaxOpenConns(1)
		w.SetMaxIdleConns(1)
		w.SetConnMaxLifetime(0)
		s.w = w
		err = s.migrate(context.Background())
		if err == nil {
			return nil
		}
		w.Close()
		if !isBusy(err) || time.Now().After(deadline) {
			return fmt.Errorf("sqlite: %s: %w", abs, err)
		}
		// Jittered so racing openers do not collide again in lock step.
		time.Sleep(time.Duration(attempt*5+rand.IntN(20)) * time.Millisecond)
	}
}

// isBusy reports SQLITE_BUSY or SQLITE_LOCKED, including their extended codes.
func isBusy(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}

// connRole is what a connection is opened for.
type connRole int

const (
	connWriter connRole = iota
	connReader
	connCheckpointer
)

// dsn builds a file: URI; the path is escaped because SQLite parses %, ? and
// # in URIs.
func dsn(path string, role connRole) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(path))
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	// NORMAL is durable across process crashes in WAL mode; only a power
	// loss can drop the last transactions, which sensors resend from their
	// spool because they only drop events after our answer.
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	switch role {
	case connReader:
		q.Add("_pragma", "query_only(1)")
	case connWriter:
		// Take the write lock at BEGIN so a transaction never has to
		// upgrade (and fail) half way.
		q.Set("_txlock", "immediate")
		// The checkpointer copies the WAL back; the writer only past
		// this bound (checkpoint.go).
		q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", writerAutoCheckpoint))
	}
	return "file:" + esc + "?" + q.Encode()
}

// migrations[i] moves the schema from user_version i to i+1.
var migrations = []string{
	`
CREATE TABLE tokens (
	hash       TEXT PRIMARY KEY,          -- hex sha256 of the plaintext token
	role       TEXT NOT NULL,
	host_id    TEXT NOT NULL DEFAULT '',  -- agent credentials only
	created_at INTEGER NOT NULL,          -- unix nanoseconds, like every time column
	expires_at INTEGER,
	revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_agent_host ON tokens(host_id) WHERE role = 'agent';

CREATE TABLE hosts (
	host_id       TEXT PRIMARY KEY,
	host_name     TEXT NOT NULL,
	agent_id      TEXT NOT NULL,
	agent_version TEXT NOT NULL DEFAULT '',
	os            TEXT NOT NULL DEFAULT '',
	labels        TEXT NOT NULL DEFAULT '{}',
	mode          TEXT NOT NULL DEFAULT '',
	health        TEXT NOT NULL DEFAULT '{}',
	enrolled_at   INTEGER NOT NULL,
	last_seen     INTEGER NOT NULL
);

CREATE TABLE alerts (
	event_id     TEXT PRIMARY KEY,        -- dedup key
	ts           INTEGER NOT NULL,        -- @timestamp
	host_id      TEXT NOT NULL,
	rule_id      TEXT NOT NULL,
	rule_ruleset TEXT NOT NULL,
	severity     INTEGER NOT NULL DEFAULT 0,
	ingested_at  INTEGER NOT NULL,
	doc          TEXT NOT NULL
);
CREATE INDEX alerts_ts ON alerts(ts);
CREATE INDEX alerts_host_ts ON alerts(host_id, ts);
CREATE INDEX alerts_rule_ts ON alerts(rule_id, ts);

CREATE TABLE events (
	event_id    TEXT PRIMARY KEY,
	kind        TEXT NOT NULL,
	dataset     TEXT NOT NULL DEFAULT '',
	host_id     TEXT NOT NULL,
	ts          INTEGER NOT NULL,
	ingested_at INTEGER NOT NULL,
	doc         TEXT NOT NULL
);
CREATE INDEX events_host_ts ON events(host_id, ts);
`,
	`
ALTER TABLE hosts ADD COLUMN seq_max INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN events_lost INTEGER NOT NULL DEFAULT 0;
`,
	`
-- Kill-switch commands: the audit trail and each host's delivery.
CREATE TABLE commands (
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT NOT NULL UNIQUE,
	action      TEXT NOT NULL,
	targets     TEXT NOT NULL,
	issuer      TEXT NOT NULL,
	reason      TEXT NOT NULL DEFAULT '',
	issued_at   INTEGER NOT NULL,
	not_after   INTEGER NOT NULL,
	state       TEXT NOT NULL,
	required    INTEGER NOT NULL,
	signed      TEXT NOT NULL,             -- killswitch.Signed as JSON
	activated   INTEGER NOT NULL DEFAULT 0 -- generation at which it became deliverable
);
CREATE INDEX commands_activated ON commands(activated);

CREATE TABLE command_hosts (
	command_id   TEXT NOT NULL REFERENCES commands(id),
	host_id      TEXT NOT NULL,
	state        TEXT NOT NULL,
	delivered_at INTEGER,
	acked_at     INTEGER,
	result       TEXT,
	PRIMARY KEY (command_id, host_id)
);
CREATE INDEX command_hosts_open ON command_hosts(host_id) WHERE state != 'acked';
`,
	`
-- What each sensor runs, from its heartbeat (api.Host).
ALTER TABLE hosts ADD COLUMN config_version TEXT NOT NULL DEFAULT '';
ALTER TABLE hosts ADD COLUMN rules_version TEXT NOT NULL DEFAULT '';
`,
	`
-- Host-bound enrolment: the hash of the host key a host first enrolled
-- with ('' for hosts enrolled before host keys), and enrolment-token uses.
ALTER TABLE hosts ADD COLUMN key_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN max_uses INTEGER NOT NULL DEFAULT 0;
`,
	// The console's aggregates (store.Overview). Filling stopped parses
	// every stored alert once, and the health index reads the events table
	// once: seconds per million rows, on the first start of this version.
	`
ALTER TABLE alerts ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
UPDATE alerts SET stopped = ` + stoppedExpr("doc") + `;
-- Covers AlertTally: each host's window is one range of the index, read in
-- host order, so the counts need neither the documents nor a sort.
CREATE INDEX alerts_tally ON alerts(host_id, ts, rule_ruleset, stopped);
-- Health changes are a handful among a host's telemetry.
CREATE INDEX events_health ON events(host_id, ts) WHERE ` + healthWhere + `;
`,
}

// stoppedExpr is 1 when the alert document in col says the sensor stopped
// what the alert is about (store.StoppingActions), else 0.
func stoppedExpr(col string) string {
	return `(CASE WHEN json_extract(` + col + `, '$.tillwatch.response.result') = 'ok' AND json_extract(` + col +
		`, '$.tillwatch.response.action') IN ('` + strings.Join(store.StoppingActions, "', '") + `') THEN 1 ` +
		`WHEN json_array_length(` + col + `, '$.tillwatch.ransomware.stopped') > 0 THEN 1 ELSE 0 END)`
}

// healthWhere selects health documents in the events table; queries repeat
// it word for word so SQLite uses the partial index events_health.
const healthWhere = `(kind = '` + event.KindState + `' OR dataset = '` + event.DatasetHealth + `')`

// SchemaVersion is the user_version this build migrates to.
var SchemaVersion = len(migrations)

func (s *Store) migrate(ctx context.Context) error {
	// Each step reads the version inside its own write transaction: two
	// processes opening a new database at once (collector run and token
	// create on first start) would otherwise both apply the same step.
	for {
		done, err := s.migrateStep(ctx)
		if err != nil || done {
			return err
		}
	}
}

// migrateStep applies the next migration, if any; done reports that the
// schema is current.
func (s *Store) migrateStep(ctx context.Context) (done bool, err error) {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the write lock first
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return false, fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return false, fmt.Errorf("schema version %d is newer than this collector understands (%d); run a newer tillwatch-collector", v, len(migrations))
	}
	if v == len(migrations) {
		return true, nil
	}
	if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
		return false, fmt.Errorf("migrate to schema %d: %w", v+1, err)
	}
	// PRAGMA takes no bound parameters; v is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migrate to schema %d: %w", v+1, err)
	}
	return false, nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *Store) insertToken(ctx context.Context, db execer, role, hostID string, expires time.Time, maxUses int) (string, error) {
	tok := store.NewToken()
	var exp sql.NullInt64
	if !expires.IsZero() {
		exp = sql.NullInt64{Int64: expires.UnixNano(), Valid: true}
	}
	_, err := db.ExecContext(ctx,
		`INSERT INTO tokens (hash, role, host_id, created_at, expires_at, max_uses) VALUES (?, ?, ?, ?, ?, ?)`,
		store.HashToken(tok), role, hostID, s.now().UnixNano(), exp, max(maxUses, 0))
	if err != nil {
		return "", fmt.Errorf("sqlite: store token: %w", err)
	}
	return tok, nil
}

// CreateToken implements store.Store.
func (s *Store) CreateToken(ctx context.Context, role, hostID string, expires time.Time, maxUses int) (string, error) {
	if err := store.ValidRole(role, hostID); err != nil {
		return "", err
	}
	return s.insertToken(ctx, s.w, role, hostID, expires, maxUses)
}

// Tokens implements store.Store.
func (s *Store) Tokens(ctx context.Context) ([]store.TokenInfo, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT hash, role, host_id, created_at, expires_at, uses, max_uses, revoked FROM tokens ORDER BY created_at, hash`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: tokens: %w", err)
	}
	defer rows.Close()
	var out []store.TokenInfo
	for rows.Next() {
		var (
			t       store.TokenInfo
			hash    string
			created int64
			expires sql.NullInt64
		)
		if err := rows.Scan(&hash, &t.Role, &t.HostID, &created, &expires, &t.Uses, &t.MaxUses, &t.Revoked); err != nil {
			return nil, fmt.Errorf("sqlite: tokens: %w", err)
		}
		t.ID, t.CreatedAt = store.TokenID(hash), time.Unix(0, created).UTC()
		if expires.Valid {
			t.ExpiresAt = time.Unix(0, expires.Int64).UTC()
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken implements store.Store.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	if len(id) != store.TokenIDLen {
		return store.ErrUnknownToken
	}
	res, err := s.w.ExecContext(ctx, `UPDATE tokens SET revoked = 1 WHERE substr(hash, 1, ?) = ?`, store.TokenIDLen, id)
	if err != nil {
		return fmt.Errorf("sqlite: revoke token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return store.ErrUnknownToken
	}
	return nil
}

// Authenticate implements store.Store.
func (s *Store) Authenticate(ctx context.Context, token string) (string, string, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return "", "", store.ErrUnknownToken
	}
	want := []byte(store.HashToken(token))
	var (
		stored, role, hostID string
		expires              sql.NullInt64
		revoked              bool
		uses, maxUses        int
	)
	err := s.st.authenticate.QueryRowContext(ctx, string(want)).
		Scan(&stored, &role, &hostID, &expires, &revoked, &uses, &maxUses)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", store.ErrUnknownToken
	}
	if err != nil {
		return "", "", fmt.Errorf("sqlite: authenticate: %w", err)
	}
	// The index lookup already matched; the constant-time compare keeps the
	// final decision free of early-exit timing whatever the index does.
	if subtle.ConstantTimeCompare([]byte(stored), want) != 1 || revoked {
		return "", "", store.ErrUnknownToken
	}
	if expires.Valid && s.now().UnixNano() >= expires.Int64 {
		return "", "", &store.TokenExpiredError{At: time.Unix(0, expires.Int64)}
	}
	if maxUses > 0 && uses >= maxUses {
		return "", "", store.ErrTokenUsedUp
	}
	return role, hostID, nil
}

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
	return api.EnrollResponse{AgentID: agentID, HostID: req.HostID, Credential: tok, CredentialExpires: by.CredentialExpires}, nil
}

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
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, `+stoppedExpr("?8")+`)`)
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
				d.RuleID, d.Ruleset, d.Severity, d.Ingested.UnixNano(), string(d.JSON))
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

// Hosts implements store.Store.
func (s *Store) Hosts(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, "(SELECT COUNT(*) FROM alerts a WHERE a.host_id = h.host_id)")
}

// HostList implements store.Overview.
func (s *Store) HostList(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, "0")
}

// hosts lists the hosts with count (an SQL expression) as AlertCount.
func (s *Store) hosts(ctx context.Context, count string) ([]api.Host, error) {
	rows, err := s.r.QueryContext(ctx, `
SELECT h.host_id, h.host_name, h.agent_id, h.agent_version, h.os, h.labels, h.mode, h.health,
       h.enrolled_at, h.last_seen, h.seq_max, h.events_lost, h.config_version, h.rules_version,
       `+count+`
FROM hosts h ORDER BY h.host_id`)
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

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.g.close()
	return errors.Join(s.st.close(), s.c.close(), s.r.Close(), s.w.Close())
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
