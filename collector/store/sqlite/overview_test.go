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
	// alerts_host_ts is gone (migration 7): a host's newest alerts are a
	// range of alerts_tally, which begins with the same columns.
	if p := plan("SELECT doc FROM alerts WHERE host_id = ? ORDER BY ts DESC, event_id DESC LIMIT 50", "h1"); !strings.Contains(p, "INDEX alerts_tally") {
		t.Errorf("a host's alerts plan %q does not use alerts_tally", p)
	}
	if p := plan(sqlHealthEvents, "h1", 10); !strings.Contains(p, "INDEX events_health") {
		t.Errorf("health plan %q does not use events_health", p)
	}
}

// TestIngestClassifiesStoppedLikeTheMigration: Ingest skips the JSON parse
// for documents that cannot say stopped (mayBeStopped); the byte search
// must never skip one that does, escaped member names included.
func TestIngestClassifiesStoppedLikeTheMigration(t *testing.T) {
	t.Parallel()
	s := open(t)
	if _, err := s.w.Exec(`INSERT INTO hosts (host_id, host_name, agent_id, enrolled_at, last_seen) VALUES ('h1', 'h1', 'a1', 0, 0)`); err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Add(-time.Hour)
	docs := []struct {
		json    string
		stopped bool
	}{
		{`{"tillwatch":{"response":{"action":"kill","result":"ok"}}}`, true},
		{`{"tillwatch":{"r\u0065sponse":{"action":"kill","result":"ok"}}}`, true},
		{`{"tillwatch":{"ransomware":{"st\u006fpped":[1]}}}`, true},
		{`{"tillwatch":{"ransomware":{"score":90,"stopped":[4242]}}}`, true},
		{`{"tillwatch":{"ransomware":{"score":90,"stopped":[]}}}`, false},
		{`{"tillwatch":{"response":{"action":"none","result":"ok"}}}`, false},
		{`{"message":"response stopped"}`, false},
		{`{"threat":{"framework":"MITRE ATT\u0026CK"}}`, false},
		{`{"tillwatch":{"ransomware":{"stopp\u0065d":[7]}}}`, true},
		{`{}`, false},
	}
	var batch []store.Doc
	want := store.AlertTally{}
	for i, d := range docs {
		if d.stopped && !mayBeStopped([]byte(d.json)) {
			t.Errorf("%s: mayBeStopped skips a stopped alert", d.json)
		}
		if strings.Contains(d.json, "ATT") && mayBeStopped([]byte(d.json)) {
			t.Errorf("%s: the escaped & of ATT&CK makes every alert parse", d.json)
		}
		batch = append(batch, store.Doc{EventID: fmt.Sprintf("a%d", i), Kind: "alert", HostID: "h1", Timestamp: ts,
			Ingested: time.Now(), RuleID: "r", Ruleset: "rmm", JSON: []byte(d.json), Origin: store.OriginSensor})
		want.Alerts++
		if !d.stopped {
			want.Unstopped++
		}
	}
	if _, _, err := s.Ingest(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	got, err := s.AlertTally(context.Background(), ts.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if got["h1"] != want {
		t.Errorf("tally %+v, want %+v", got["h1"], want)
	}
}
