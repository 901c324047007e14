package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// countingCommands counts the store's pending-command looks.
type countingCommands struct {
	store.CommandStore
	single, many atomic.Int64
}

func (c *countingCommands) PendingCommands(ctx context.Context, host string, now time.Time) ([]killswitch.Signed, error) {
	c.single.Add(1)
	return c.CommandStore.PendingCommands(ctx, host, now)
}

func (c *countingCommands) PendingCommandsFor(ctx context.Context, hosts []string, now time.Time, answer func(map[string][]killswitch.Signed)) (map[string][]killswitch.Signed, error) {
	c.many.Add(1)
	return c.CommandStore.PendingCommandsFor(ctx, hosts, now, answer)
}

// TestHubLooksOnceForEveryWaiter: when a command becomes deliverable, the
// hub finds the commands of all waiting sensors in one look at the store,
// not one per sensor, and hands each its own.
func TestHubLooksOnceForEveryWaiter(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cs := &countingCommands{CommandStore: st}
	h := newHub(cs, slog.New(slog.DiscardHandler), time.Now)

	const n = 200
	var hosts []string
	waiters := make([]*waiter, n)
	for i := range waiters {
		hosts = append(hosts, fmt.Sprintf("till-%03d", i))
		waiters[i] = h.wait(hosts[i])
		defer h.done(waiters[i])
	}
	idle := h.wait("till-idle") // addressed by nothing: keeps waiting
	defer h.done(idle)
	ctx := context.Background()
	now := time.Now()
	err = cs.CreateCommand(ctx, store.CommandRecord{ID: "cmd-1", Action: killswitch.ActionDisableRMM, Targets: "all",
		Issuer: "test", IssuedAt: now, NotAfter: now.Add(time.Hour), State: store.CommandActive,
		Signed: killswitch.Signed{Payload: []byte(`{"id":"cmd-1"}`)}}, hosts)
	if err != nil {
		t.Fatal(err)
	}
	h.Notify()
	for i, w := range waiters {
		select {
		case a := <-w.answer:
			if a.err != nil || len(a.cmds) != 1 {
				t.Fatalf("%s answered %+v", hosts[i], a)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s was never answered", hosts[i])
		}
	}
	select {
	case a := <-idle.answer:
		t.Errorf("a sensor with nothing pending was answered %+v", a)
	default:
	}
	// One look for the Notify; the generation poll may add one more.
	if m, s := cs.many.Load(), cs.single.Load(); m < 1 || m > 2 || s != 0 {
		t.Errorf("%d waiters cost %d looks for many and %d for one, want 1-2 and 0", n, m, s)
	}
}

// failingMark is a command store whose delivered mark fails after the
// commands were read (a full disk, a node going away mid-write).
type failingMark struct{ store.CommandStore }

func (f failingMark) PendingCommandsFor(ctx context.Context, hosts []string, now time.Time, answer func(map[string][]killswitch.Signed)) (map[string][]killswitch.Signed, error) {
	m, err := f.CommandStore.PendingCommandsFor(ctx, hosts, now, answer)
	if err != nil {
		return m, err
	}
	return m, errors.New("disk full")
}

// TestHubAnswersBeforeTheMark: sensors get their commands from the read;
// a failed delivered mark after it is logged, not turned into an error
// for sensors that already have their commands.
func TestHubAnswersBeforeTheMark(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "t.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := newHub(failingMark{st}, slog.New(slog.DiscardHandler), time.Now)
	w := h.wait("till-1")
	defer h.done(w)
	ctx := context.Background()
	now := time.Now()
	err = st.CreateCommand(ctx, store.CommandRecord{ID: "cmd-1", Action: killswitch.ActionDisableRMM, Targets: "all",
		Issuer: "test", IssuedAt: now, NotAfter: now.Add(time.Hour), State: store.CommandActive,
		Signed: killswitch.Signed{Payload: []byte(`{"id":"cmd-1"}`)}}, []string{"till-1"})
	if err != nil {
		t.Fatal(err)
	}
	h.Notify()
	select {
	case a := <-w.answer:
		if a.err != nil || len(a.cmds) != 1 {
			t.Fatalf("answered %+v, want the command and no error", a)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("never answered")
	}
}
