package sqlite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "tw.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func alert(id, host, rule string, ts time.Time) store.Doc {
	doc, _ := json.Marshal(map[string]any{
		"@timestamp": ts.Format(time.RFC3339Nano),
		"event":      map[string]any{"id": id, "kind": "alert"},
		"host":       map[string]any{"id": host},
		"rule":       map[string]any{"id": rule, "ruleset": "rmm"},
	})
	return store.Doc{EventID: id, Kind: "alert", HostID: host, Timestamp: ts, Ingested: time.Now(),
		RuleID: rule, Ruleset: "rmm", Severity: 70, JSON: doc}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	tests := []struct {
		role, host string
		wantErr    bool
	}{
		{api.RoleSensor, "", false},
		{api.RoleAnalyst, "", false},
		{api.RoleResponder, "", false},
		{api.RoleAgent, "h1", false},
		{api.RoleAgent, "", true},
		{api.RoleAnalyst, "h1", true},
		{"admin", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.role+"/"+tt.host, func(t *testing.T) {
			t.Parallel()
			tok, err := s.CreateToken(ctx, tt.role, tt.host, time.Time{}, 0)
			if tt.wantErr {
				if !errors.Is(err, store.ErrInvalidRole) {
					t.Fatalf("got %v, want ErrInvalidRole", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			role, host, err := s.Authenticate(ctx, tok)
			if err != nil || role != tt.role || host != tt.host {
				t.Fatalf("Authenticate = %q %q %v", role, host, err)
			}
		})
	}
	for _, bad := range []string{"", "tw_nope", "nope", TokenPrefix} {
		if _, _, err := s.Authenticate(ctx, bad); !errors.Is(err, store.ErrUnknownToken) {
			t.Errorf("Authenticate(%q) = %v, want ErrUnknownToken", bad, err)
		}
	}
	// Only the hash is stored.
	tok, _ := s.CreateToken(ctx, api.RoleAnalyst, "", time.Time{}, 0)
	var n int
	s.r.QueryRow("SELECT COUNT(*) FROM tokens WHERE hash = ?", tok).Scan(&n)
	if n != 0 {
		t.Error("plaintext token found in the database")
	}
}

func TestEnrollReplacesCredential(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	req := api.EnrollRequest{HostID: "till-1", HostName: "Till 1", OS: "linux", AgentVersion: "1.0", Labels: map[string]string{"store": "42"}}
	first, err := s.Enroll(ctx, req, store.Enroller{})
	if err != nil {
		t.Fatal(err)
	}
	req.AgentVersion = "1.1"
	second, err := s.Enroll(ctx, req, store.Enroller{})
	if err != nil {
		t.Fatal(err)
	}
	if first.AgentID != second.AgentID {
		t.Errorf("agent id changed on re-enrolment: %s -> %s", first.AgentID, second.AgentID)
	}
	if _, _, err := s.Authenticate(ctx, first.Credential); !errors.Is(err, store.ErrUnknownToken) {
		t.Errorf("old credential still valid: %v", err)
	}
	role, host, err := s.Authenticate(ctx, second.Credential)
	if err != nil || role != api.RoleAgent || host != "till-1" {
		t.Fatalf("new credential: %q %q %v", role, host, err)
	}
	hosts, err := s.Hosts(ctx)
	if err != nil || len(hosts) != 1 {
		t.Fatalf("Hosts = %v %v", hosts, err)
	}
	h := hosts[0]
	if h.AgentVersion != "1.1" || h.Labels["store"] != "42" || h.OS != "linux" || h.HostName != "Till 1" {
		t.Errorf("host %+v", h)
	}
}

func TestIngestDedup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	now := time.Now()
	tele, _ := json.Marshal(map[string]any{"event": map[string]any{"id": "e1", "kind": "event"}})
	batch := []store.Doc{
		alert("a1", "h1", "r1", now),
		alert("a2", "h1", "r1", now),
		alert("a1", "h1", "r1", now), // duplicate inside the batch
		{EventID: "e1", Kind: "event", Dataset: "tillwatch.process", HostID: "h1", Timestamp: now, Ingested: now, JSON: tele},
	}
	acc, dup, err := s.Ingest(ctx, batch)
	if err != nil || acc != 3 || dup != 1 {
		t.Fatalf("first Ingest = %d, %d, %v; want 3, 1", acc, dup, err)
	}
	acc, dup, err = s.Ingest(ctx, batch)
	if err != nil || acc != 0 || dup != 4 {
		t.Fatalf("second Ingest = %d, %d, %v; want 0, 4", acc, dup, err)
	}
	got, err := s.QueryAlerts(ctx, store.AlertFilter{})
	if err != nil || len(got) != 2 {
		t.Fatalf("QueryAlerts = %d docs, %v; want 2", len(got), err)
	}
}

func TestConcurrentIngestNeverBusy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	const writers, batches, per = 8, 10, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				docs := make([]store.Doc, per)
				for i := range docs {
					docs[i] = alert(fmt.Sprintf("w%d-b%d-%d", w, b, i), fmt.Sprintf("h%d", w), "r", time.Now())
				}
				if _, _, err := s.Ingest(ctx, docs); err != nil {
					errs <- err
				}
				if _, err := s.QueryAlerts(ctx, store.AlertFilter{Limit: 10}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n int
	s.r.QueryRow("SELECT COUNT(*) FROM alerts").Scan(&n)
	if n != writers*batches*per {
		t.Fatalf("%d alerts stored, want %d", n, writers*batches*per)
	}
}

func TestQueryAlerts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var docs []store.Doc
	for i := range 10 {
		host := "h1"
		if i%2 == 1 {
			host = "h2"
		}
		rule := "rmm.anydesk"
		if i >= 5 {
			rule = "ransomware.burst"
		}
		docs = append(docs, alert(fmt.Sprintf("a%02d", i), host, rule, base.Add(time.Duration(i)*time.Minute)))
	}
	if _, _, err := s.Ingest(ctx, docs); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    store.AlertFilter
		want []string
	}{
		{"all newest first", store.AlertFilter{}, []string{"a09", "a08", "a07", "a06", "a05", "a04", "a03", "a02", "a01", "a00"}},
		{"limit", store.AlertFilter{Limit: 3}, []string{"a09", "a08", "a07"}},
		{"since", store.AlertFilter{Since: base.Add(7 * time.Minute)}, []string{"a09", "a08", "a07"}},
		{"host", store.AlertFilter{HostID: "h2", Limit: 2}, []string{"a09", "a07"}},
		{"rule", store.AlertFilter{RuleID: "rmm.anydesk"}, []string{"a04", "a03", "a02", "a01", "a00"}},
		{"all filters", store.AlertFilter{HostID: "h1", RuleID: "rmm.anydesk", Since: base.Add(time.Minute)}, []string{"a04", "a02"}},
		{"no match", store.AlertFilter{HostID: "nope"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := s.QueryAlerts(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			ids := []string{}
			for _, raw := range got {
				var d struct {
					Event struct{ ID string } `json:"event"`
				}
				if err := json.Unmarshal(raw, &d); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, d.Event.ID)
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", ids, tt.want)
			}
		})
	}
}

func TestHeartbeatAndHosts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	s, err := Open(filepath.Join(t.TempDir(), "tw.db"), Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Enroll(ctx, api.EnrollRequest{HostID: "h1", HostName: "one", AgentVersion: "1"}, store.Enroller{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clock = clock.Add(time.Hour)
	mu.Unlock()
	err = s.Heartbeat(ctx, "h1", api.Heartbeat{HostID: "h1", AgentVersion: "2", Mode: "monitor", Health: map[string]string{"fanotify": "ok"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, "ghost", api.Heartbeat{}); !errors.Is(err, store.ErrUnknownHost) {
		t.Fatalf("heartbeat for unknown host: %v", err)
	}
	if _, _, err := s.Ingest(ctx, []store.Doc{alert("x", "h1", "r", clock)}); err != nil {
		t.Fatal(err)
	}
	hosts, err := s.Hosts(ctx)
	if err != nil || len(hosts) != 1 {
		t.Fatalf("%v %v", hosts, err)
	}
	h := hosts[0]
	if !h.LastSeen.Equal(clock) || !h.EnrolledAt.Equal(clock.Add(-time.Hour)) {
		t.Errorf("last_seen %v enrolled_at %v", h.LastSeen, h.EnrolledAt)
	}
	if h.AgentVersion != "2" || h.Mode != "monitor" || h.Health["fanotify"] != "ok" || h.AlertCount != 1 || h.HostName != "one" {
		t.Errorf("host %+v", h)
	}
}

func TestMigrationsAndReopen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dir with ?#% chars", "tw.db")
	if err := mkdirAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := s.CreateToken(ctx, api.RoleAnalyst, "", time.Time{}, 0)
	var v int
	s.w.QueryRow("PRAGMA user_version").Scan(&v)
	if v != SchemaVersion {
		t.Fatalf("user_version %d, want %d", v, SchemaVersion)
	}
	var mode string
	s.w.QueryRow("PRAGMA journal_mode").Scan(&mode)
	if mode != "wal" {
		t.Errorf("journal_mode %s, want wal", mode)
	}
	s.Close()

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Authenticate(ctx, tok); err != nil {
		t.Fatalf("token lost across reopen: %v", err)
	}
	// A database from a newer collector is refused, not corrupted.
	s.w.Exec(fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion+1))
	s.Close()
	if _, err := Open(path, Options{}); err == nil {
		t.Fatal("opened a database with a newer schema")
	}
}

func mkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }

// TestConcurrentFirstOpen: several processes' worth of stores opening one
// brand-new database at once all succeed (collector run and token create
// on first start), each migration applied once.
func TestConcurrentFirstOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "new.db")
	const n = 6
	errs := make(chan error, n)
	for range n {
		go func() {
			st, err := Open(path, Options{})
			if err == nil {
				err = st.Close()
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("concurrent first open: %v", err)
		}
	}
}

// TestGroupCommitAcks: a fleet acknowledging at once shares transactions;
// every acknowledgement is stored, each caller learns its own result, and
// writes after Close fail instead of hanging.
func TestGroupCommitAcks(t *testing.T) {
	t.Parallel()
	s, err := Open(filepath.Join(t.TempDir(), "g.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 300
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("till-%03d", i)
	}
	rec := store.CommandRecord{ID: "cmd-group-0001", Action: "scan", Targets: "all", Issuer: "test",
		IssuedAt: time.Now(), NotAfter: time.Now().Add(time.Hour), State: store.CommandActive}
	if err := s.CreateCommand(ctx, rec, hosts); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, n+1)
	for _, h := range append(hosts, "till-stranger") {
		go func() {
			errs <- s.AckCommand(ctx, rec.ID, h, killswitch.Result{Status: killswitch.StatusOK}, time.Now())
		}()
	}
	var unknown int
	for range n + 1 {
		switch err := <-errs; {
		case errors.Is(err, store.ErrUnknownCommand):
			unknown++
		case err != nil:
			t.Fatal(err)
		}
	}
	if unknown != 1 {
		t.Fatalf("%d unknown-command answers, want exactly the stranger's", unknown)
	}
	_, got, err := s.Command(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range got {
		if h.State != store.HostAcked {
			t.Fatalf("host %s not acked after the group commit", h.HostID)
		}
	}
	s.Close()
	if err := s.AckCommand(ctx, rec.ID, hosts[0], killswitch.Result{Status: killswitch.StatusOK}, time.Now()); err == nil {
		t.Fatal("write after Close succeeded")
	}
}

// TestCheckpointerCopiesTheWALBack: ingested rows reach the database file
// itself without the writer checkpointing (its own threshold,
// writerAutoCheckpoint pages, is far above what is written here), so the
// background checkpointer did it; and the WAL file stays below that bound.
func TestCheckpointerCopiesTheWALBack(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tw.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	size := func(p string) int64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size(path)
	pad := strings.Repeat("x", 1000)
	ts := time.Now()
	for b := range 4 {
		var docs []store.Doc
		for i := range 500 {
			d := alert(fmt.Sprintf("e-%d-%d", b, i), "h1", "r", ts)
			d.JSON = []byte(`{"pad":"` + pad + `"}`)
			docs = append(docs, d)
		}
		if _, _, err := s.Ingest(context.Background(), docs); err != nil {
			t.Fatal(err)
		}
	}
	// 2,000 rows of 1 KB: about 2 MB, some 500 pages, in the WAL first.
	deadline := time.Now().Add(10 * time.Second)
	for size(path)-before < 2<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("database file grew by %d bytes in 10 s: the WAL was not checkpointed (WAL %d bytes)",
				size(path)-before, size(path+"-wal"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if wal := size(path + "-wal"); wal > writerAutoCheckpoint*4096 {
		t.Errorf("WAL is %d bytes, above the writer's bound", wal)
	}
}
