// The schema and its migrations, one transaction per version step.

package sqlite

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

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
	// alerts_tally begins with (host_id, ts): alerts_host_ts answered
	// nothing it does not, and cost an index insert for every alert.
	`
DROP INDEX IF EXISTS alerts_host_ts;
`,
	// The credentials generation (store.CredentialCache): every change of
	// a token row bumps it in the same transaction, by trigger, so no code
	// path (nor the CLI writing the file from another process) can change
	// a credential without collectors seeing it within the window.
	`
CREATE TABLE generations (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO generations (name, value) VALUES ('credentials', 0);
CREATE TRIGGER tokens_updated AFTER UPDATE ON tokens BEGIN
	UPDATE generations SET value = value + 1 WHERE name = 'credentials';
END;
CREATE TRIGGER tokens_deleted AFTER DELETE ON tokens BEGIN
	UPDATE generations SET value = value + 1 WHERE name = 'credentials';
END;
`,
}

// stoppedExpr is 1 when the alert document in col says the sensor stopped
// what the alert is about (store.StoppingActions), else 0.
//
// It parses the document: at full ingest that was an eighth of the
// collector's CPU, so Ingest evaluates it only for documents that
// mayBeStopped.
func stoppedExpr(col string) string {
	return `(CASE WHEN json_extract(` + col + `, '$.tillwatch.response.result') = 'ok' AND json_extract(` + col +
		`, '$.tillwatch.response.action') IN ('` + strings.Join(store.StoppingActions, "', '") + `') THEN 1 ` +
		`WHEN json_array_length(` + col + `, '$.tillwatch.ransomware.stopped') > 0 THEN 1 ELSE 0 END)`
}

// mayBeStopped is false when doc cannot make stoppedExpr 1: it names
// neither "response" nor "stopped", and has no \u escape of a lower-case
// letter that could spell either (json_extract matches escaped names;
// encoding/json's \u0026 for the & of "ATT&CK", in nearly every alert,
// cannot). Alerts without a response (monitor mode, rules that only
// alert) are settled by this byte search instead of a JSON parse.
func mayBeStopped(doc []byte) bool {
	if bytes.Contains(doc, []byte(`"response"`)) || bytes.Contains(doc, []byte(`"stopped"`)) {
		return true
	}
	for rest := doc; ; {
		i := bytes.Index(rest, []byte(`\u00`))
		if i < 0 || i+4 >= len(rest) {
			return false
		}
		if c := rest[i+4]; c == '6' || c == '7' {
			return true
		}
		rest = rest[i+4:]
	}
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
