package spooled

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/collector/store/storetest"
)

// flaky is a real SQLite store whose Ingest can be switched off, standing
// in for an Elasticsearch outage (the real outage runs in
// sim/fleet's TestElasticsearchOutage).
type flaky struct {
	*sqlite.Store
	down atomic.Bool
}

func (f *flaky) Ping(ctx context.Context) error {
	if f.down.Load() {
		return errors.New("connection refused")
	}
	return f.Store.Ping(ctx)
}

func (f *flaky) Ingest(ctx context.Context, docs []store.Doc) (int, int, error) {
	if f.down.Load() {
		return 0, 0, errors.New("connection refused")
	}
	return f.Store.Ingest(ctx, docs)
}

func open(t *testing.T, db string) *flaky {
	t.Helper()
	st, err := sqlite.Open(db, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &flaky{Store: st}
}

func alerts(host string, from, n int) []store.Doc {
	var out []store.Doc
	for i := range n {
		d := storetest.Alert(fmt.Sprintf("%s-%d", host, from+i), host, "TW-T-1", time.Now())
		d.Sequence = int64(from + i)
		out = append(out, d)
	}
	return out
}

func count(t *testing.T, st store.Store, host string) int {
	t.Helper()
	docs, err := st.QueryAlerts(context.Background(), store.AlertFilter{HostID: host, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(docs)
}

// TestSpoolAcceptsDuringOutageAndReplaysAcrossRestart: batches the backend
// cannot take are accepted into the spool, survive a collector restart,
// and are stored exactly once when the backend answers, with no false
// events-lost alert; a credential confirmed before the outage still works.
func TestSpoolAcceptsDuringOutageAndReplaysAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(t.TempDir(), "c.db")
	b := open(t, db)
	s, err := Wrap(b, Options{Dir: dir, Attempt: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp, err := s.Enroll(ctx, api.EnrollRequest{HostID: "till-1", HostName: "till-1", AgentVersion: "1"}, store.Enroller{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Ingest(ctx, alerts("till-1", 1, 3)); err != nil {
		t.Fatal(err)
	}
	s.TrackSequences(ctx, "till-1", []int64{1, 2, 3})

	b.down.Store(true)
	acc, _, err := s.Ingest(ctx, alerts("till-1", 4, 3))
	if err != nil || acc != 3 {
		t.Fatalf("during the outage: accepted %d, %v; want 3 spooled", acc, err)
	}
	s.TrackSequences(ctx, "till-1", []int64{4, 5, 6})
	if s.Depth() != 1 {
		t.Fatalf("spool depth %d", s.Depth())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// A restarted collector replays what is spooled once the backend answers.
	b = open(t, db)
	b.down.Store(true)
	s, err = Wrap(b, Options{Dir: dir, Attempt: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Depth() != 1 {
		t.Fatalf("spool not recovered after restart: depth %d", s.Depth())
	}
	b.down.Store(false)
	deadline := time.Now().Add(15 * time.Second)
	for s.Depth() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("spool not drained")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := count(t, s, "till-1"); n != 6 {
		t.Fatalf("%d alerts stored, want exactly 6", n)
	}
	hosts, _ := s.Hosts(ctx)
	if len(hosts) != 1 || hosts[0].EventsLost != 0 || hosts[0].LastSequence != 6 {
		t.Fatalf("sequences after replay: %+v", hosts)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("spool files left: %v", entries)
	}
	_ = resp
}

func TestAuthenticateDuringOutage(t *testing.T) {
	b := open(t, filepath.Join(t.TempDir(), "c.db"))
	s, err := Wrap(b, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	resp, err := s.Enroll(ctx, api.EnrollRequest{HostID: "till-2", HostName: "till-2", AgentVersion: "1"}, store.Enroller{})
	if err != nil {
		t.Fatal(err)
	}
	analyst, _ := s.CreateToken(ctx, api.RoleAnalyst, "", time.Time{}, 0)
	b.Store.Close() // the backend no longer answers
	role, host, err := s.Authenticate(ctx, resp.Credential)
	if err != nil || role != api.RoleAgent || host != "till-2" {
		t.Fatalf("credential issued before the outage: %s %s %v", role, host, err)
	}
	if _, _, err := s.Authenticate(ctx, analyst); err == nil {
		t.Fatal("a token never confirmed by the backend was accepted during the outage")
	}
}

func TestSpoolFull(t *testing.T) {
	b := open(t, filepath.Join(t.TempDir(), "c.db"))
	s, err := Wrap(b, Options{Dir: t.TempDir(), MaxBytes: 2000, Attempt: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b.down.Store(true)
	if _, _, err := s.Ingest(context.Background(), alerts("till-3", 1, 50)); err == nil {
		t.Fatal("a batch larger than the spool was accepted")
	}
}

// TestSlowIsNotDown: a backend that fails a batch but answers a ping is
// slow, not down: the batch is refused (the sensor retries), not spooled.
func TestSlowIsNotDown(t *testing.T) {
	b := &slow{flaky: open(t, filepath.Join(t.TempDir(), "c.db"))}
	s, err := Wrap(b, Options{Dir: t.TempDir(), Attempt: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Ingest(context.Background(), alerts("till-4", 1, 2)); err == nil {
		t.Fatal("a slow backend's failure was hidden")
	}
	if s.Depth() != 0 {
		t.Fatal("a slow (not down) backend's batch was spooled")
	}
}

// slow fails every batch but answers pings.
type slow struct{ *flaky }

func (s *slow) Ingest(context.Context, []store.Doc) (int, int, error) {
	return 0, 0, errors.New("timed out")
}
