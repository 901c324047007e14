package watchdog_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/collector/watchdog"
	"github.com/tillwatch/tillwatch/internal/event"
)

// clock is a settable clock shared by the store and the checks.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestSilencedOncePerEpisode(t *testing.T) {
	t.Parallel()
	clk := &clock{t: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "db"), sqlite.Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if _, err := st.Enroll(ctx, api.EnrollRequest{HostID: "till-7", HostName: "till 7", AgentVersion: "1.0"}, store.Enroller{}); err != nil {
		t.Fatal(err)
	}
	after := 5 * time.Minute

	clk.add(time.Minute)
	if n, err := watchdog.CheckSilenced(ctx, st, after, clk.now()); err != nil || n != 0 {
		t.Fatalf("a host heard from a minute ago is not silent: %d, %v", n, err)
	}
	clk.add(10 * time.Minute)
	for i, want := range []int{1, 0, 0} { // repeated checks, one episode: one alert
		if n, err := watchdog.CheckSilenced(ctx, st, after, clk.now()); err != nil || n != want {
			t.Fatalf("check %d: %d new alerts, %v; want %d", i, n, err, want)
		}
		clk.add(time.Minute)
	}
	alerts, err := st.QueryAlerts(ctx, store.AlertFilter{HostID: "till-7"})
	if err != nil || len(alerts) != 1 {
		t.Fatalf("stored alerts: %d, %v", len(alerts), err)
	}
	var a event.Event
	if err := json.Unmarshal(alerts[0], &a); err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(); err != nil {
		t.Errorf("silenced alert lacks required fields: %v", err)
	}
	if a.Rule.ID != watchdog.RuleSilenced || a.Rule.Ruleset != event.RulesetIntegrity || a.Host.Name != "till 7" {
		t.Errorf("alert = %+v", a)
	}
	// The alert itself must not make the host look alive.
	hosts, _ := st.Hosts(ctx)
	if !hosts[0].LastSeen.Equal(time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("last_seen moved to %s by the collector's own alert", hosts[0].LastSeen)
	}
	// Back, then silent again: a second episode, a second alert.
	if err := st.Heartbeat(ctx, "till-7", api.Heartbeat{HostID: "till-7", AgentVersion: "1.0"}); err != nil {
		t.Fatal(err)
	}
	clk.add(6 * time.Minute)
	if n, _ := watchdog.CheckSilenced(ctx, st, after, clk.now()); n != 1 {
		t.Errorf("second silence raised %d alerts, want 1", n)
	}
}
