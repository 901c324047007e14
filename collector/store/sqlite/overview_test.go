package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
)

// TestMigrationFillsStopped: alerts stored before the stopped column
// existed are classified by the migration, so the console's counts do not
// change when the collector is upgraded.
func TestMigrationFillsStopped(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tw.db")
	db, err := sql.Open("sqlite", dsn(path, connWriter))
	if err != nil {
		t.Fatal(err)
	}
	const before = 5 // the schema without alerts.stopped
	for _, m := range migrations[:before] {
		if _, err := db.Exec(m); err != nil {
			t.Fatal(err)
		}
	}
	ts := time.Now().Add(-time.Hour)
	if _, err := db.Exec(`INSERT INTO hosts (host_id, host_name, agent_id, enrolled_at, last_seen) VALUES ('h1', 'h1', 'a1', 0, 0)`); err != nil {
		t.Fatal(err)
	}
	for i, doc := range []string{
		`{"tillwatch":{"response":{"action":"kill","result":"ok"}}}`,
		`{"tillwatch":{"response":{"action":"none","result":"ok"}}}`,
		`{"tillwatch":{"ransomware":{"score":90,"stopped":[4242]}}}`,
		`{"tillwatch":{"response":{"action":"quarantine","result":"failed"}}}`,
		`{}`,
	} {
		if _, err := db.Exec(`INSERT INTO alerts (event_id, ts, host_id, rule_id, rule_ruleset, ingested_at, doc) VALUES (?, ?, 'h1', 'r', 'rmm', 0, ?)`,
			fmt.Sprintf("a%d", i), ts.UnixNano(), doc); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", before)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.AlertTally(context.Background(), ts.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if want := (store.AlertTally{Alerts: 5, Unstopped: 3}); got["h1"] != want {
		t.Errorf("tally after migration %+v, want %+v", got["h1"], want)
	}
}

// TestOverviewQueriesUseTheirIndexes: the console's aggregates read
// indexes, never the documents: the tally from the covering index alone,
// the health list from the partial index.
func TestOverviewQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	s := open(t)
	plan := func(q string, args ...any) string {
		rows, err := s.r.Query("EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			out = append(out, detail)
		}
		return strings.Join(out, "; ")
	}
	if p := plan(sqlAlertTally, 0, "integrity"); !strings.Contains(p, "COVERING INDEX alerts_tally") || strings.Contains(p, "TEMP B-TREE") {
		t.Errorf("tally plan %q does not read the covering index alone, without a sort", p)
	}
	if p := plan(sqlHealthEvents, "h1", 10); !strings.Contains(p, "INDEX events_health") {
		t.Errorf("health plan %q does not use events_health", p)
	}
}
