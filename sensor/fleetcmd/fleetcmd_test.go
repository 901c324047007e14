package fleetcmd_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/collectortest"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/sensor/fleetcmd"
	"github.com/tillwatch/tillwatch/sensor/uplink"
)

// recorder stands in for the local action executor (sensor/action has its
// own tests on real processes, files and nftables): it records what it was
// told to do.
type recorder struct {
	mu  sync.Mutex
	ran []killswitch.Command
}

func (r *recorder) Run(_ context.Context, c killswitch.Command) killswitch.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ran = append(r.ran, c)
	return killswitch.Result{Status: killswitch.StatusOK, Detail: "done", Affected: []string{c.Action}}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ran)
}

type alerts struct {
	mu  sync.Mutex
	got []event.Event
}

func (a *alerts) emit(ev event.Event) { a.mu.Lock(); a.got = append(a.got, ev); a.mu.Unlock() }
func (a *alerts) take() []event.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.got
	a.got = nil
	return out
}

type fixture struct {
	coll      *collectortest.Collector
	up        *uplink.Uplink
	acts      *recorder
	alerts    *alerts
	stateDir  string
	collector ed25519.PrivateKey
	alice     ed25519.PrivateKey
	bob       ed25519.PrivateKey
	pinned    []killswitch.PublicKey
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	coll := collectortest.Start(t, "", "")
	f := &fixture{coll: coll, acts: &recorder{}, alerts: &alerts{}, stateDir: t.TempDir()}
	tokFile := filepath.Join(t.TempDir(), "enroll.token")
	if err := os.WriteFile(tokFile, []byte(coll.Token(api.RoleSensor)), 0o600); err != nil {
		t.Fatal(err)
	}
	up, err := uplink.New(uplink.Options{
		Client: coll.Client(""), URL: coll.URL, StateDir: f.stateDir, TokenFile: tokFile,
		Request: api.EnrollRequest{HostID: "till-7", HostName: "till-7", AgentVersion: "test", Labels: map[string]string{"store": "s7"}},
		Log:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Enroll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	f.up = up
	load := func(path string) ed25519.PrivateKey {
		k, err := killswitch.LoadPrivateKey(path)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	f.collector = load(filepath.Join(coll.Dir(), "killswitch-signing.key"))
	f.alice = load(coll.ResponderKeyFile("alice"))
	f.bob = load(coll.ResponderKeyFile("bob"))
	for _, name := range collectortest.Responders {
		pub, err := killswitch.LoadPublicKey(coll.ResponderPubFile(name))
		if err != nil {
			t.Fatal(err)
		}
		f.pinned = append(f.pinned, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: name})
	}
	return f
}

func (f *fixture) receiver(t *testing.T) *fleetcmd.Receiver {
	t.Helper()
	return f.receiverWith(t, killswitch.Policy{})
}

func (f *fixture) receiverWith(t *testing.T, p killswitch.Policy) *fleetcmd.Receiver {
	t.Helper()
	r, err := fleetcmd.New(fleetcmd.Options{
		Link: f.up, Actions: f.acts, HostID: "till-7", Labels: map[string]string{"store": "s7"}, Policy: p,
		ResponderKeys: f.pinned, StateDir: f.stateDir, Emit: f.alerts.emit, Wait: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCommandReachesSensorAndIsAcknowledged: a responder issues through
// the real collector; the sensor's long-poll receives it, verifies it
// against the key pinned at enrolment, acts once and acknowledges.
func TestCommandReachesSensorAndIsAcknowledged(t *testing.T) {
	f := newFixture(t)
	if len(f.up.CollectorKeys()) != 1 {
		t.Fatalf("pinned %d collector keys at enrolment", len(f.up.CollectorKeys()))
	}
	r := f.receiver(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	resp := f.coll.Client(f.coll.Token(api.RoleResponder))
	st, err := resp.IssueCommand(ctx, api.IssueRequest{Action: killswitch.ActionDisableRMM,
		Targets: killswitch.Targets{All: true}, Params: map[string]string{"product": "kaseya-vsa"}, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	// A token alone gets nothing that acts; one responder key signs it.
	if st, err = resp.ApproveCommand(ctx, st.Command.ID, killswitch.Sign(f.alice, st.Command.Signed.Payload)); err != nil || st.Command.State != store.CommandActive {
		t.Fatalf("approval: %s %v", st.Command.State, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := resp.Command(ctx, st.Command.ID)
		if err != nil {
			t.Fatal(err)
		}
		if h := got.Hosts[0]; h.State == store.HostAcked {
			if h.Result.Status != killswitch.StatusOK || f.acts.count() != 1 {
				t.Fatalf("acked %+v after %d actions", h.Result, f.acts.count())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not acknowledged: %+v", got.Hosts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a := f.alerts.take(); len(a) != 0 {
		t.Fatalf("a valid command raised alerts: %+v", a)
	}
}

// TestBadCommandMatrix: every kind of bad command is refused by the
// sensor, nothing runs, and each is reported as a killswitch alert naming
// the reason.
func TestBadCommandMatrix(t *testing.T) {
	f := newFixture(t)
	r := f.receiver(t)
	ctx := context.Background()
	now := time.Now().UTC()
	cmd := func(id, action string, targets killswitch.Targets) killswitch.Command {
		return killswitch.Command{V: killswitch.Version, ID: id, IssuedAt: now, NotBefore: now, NotAfter: now.Add(time.Hour),
			Issuer: "test", Targets: targets, Action: action, Params: map[string]string{"product": "kaseya-vsa"}}
	}
	me := killswitch.Targets{Hosts: []string{"till-7"}}
	sign := func(c killswitch.Command, keys ...ed25519.PrivateKey) killswitch.Signed {
		p, err := c.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		s := killswitch.Signed{Payload: p}
		for _, k := range keys {
			s.AddSignature(killswitch.Sign(k, p))
		}
		return s
	}
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)

	// The replayed case needs a command this sensor already ran.
	ran := cmd("cmd-ran-before", killswitch.ActionScan, me)
	first := sign(ran, f.collector)
	if res := r.Handle(ctx, &first); res.Status != killswitch.StatusOK {
		t.Fatalf("valid command: %+v", res)
	}
	if res := r.Handle(ctx, &first); res.Status != killswitch.StatusOK || f.acts.count() != 1 {
		t.Fatalf("redelivery ran again or answered differently: %+v (%d runs)", res, f.acts.count())
	}
	f.alerts.take()

	expired := cmd("cmd-expired-1", killswitch.ActionDisableRMM, me)
	expired.IssuedAt, expired.NotBefore, expired.NotAfter = now.Add(-2*time.Hour), now.Add(-2*time.Hour), now.Add(-time.Hour)
	future := cmd("cmd-future-1", killswitch.ActionDisableRMM, me)
	future.NotBefore, future.NotAfter = now.Add(time.Hour), now.Add(2*time.Hour)
	replayed := ran
	replayed.Action = killswitch.ActionDisableRMM
	forged := sign(cmd("cmd-forged-1", killswitch.ActionDisableRMM, me), stranger)
	forged.Signatures[0].KeyID = killswitch.KeyID(f.collector.Public().(ed25519.PublicKey))

	cases := []struct {
		name   string
		signed killswitch.Signed
		want   string
	}{
		{"unsigned", sign(cmd("cmd-unsigned-1", killswitch.ActionDisableRMM, me)), killswitch.RefuseUnsigned},
		{"wrongly signed", forged, killswitch.RefuseBadSignature},
		{"unpinned key", sign(cmd("cmd-unpinned-1", killswitch.ActionDisableRMM, me), stranger), killswitch.RefuseUnpinnedKey},
		{"expired", sign(expired, f.collector), killswitch.RefuseExpired},
		{"not yet valid", sign(future, f.collector), killswitch.RefuseNotYetValid},
		{"replayed", sign(replayed, f.collector), killswitch.RefuseReplayed},
		{"misaddressed", sign(cmd("cmd-misaddr-1", killswitch.ActionDisableRMM, killswitch.Targets{Hosts: []string{"till-8"}}), f.collector), killswitch.RefuseMisaddressed},
		{"unknown action", sign(cmd("cmd-unknown-1", "wipe-disk", me), f.collector), killswitch.RefuseUnknownAction},
		{"under-approved", sign(cmd("cmd-under-1", killswitch.ActionEnableRMM, me), f.collector, f.alice), killswitch.RefuseUnderApproved},
		{"destructive by the collector alone", sign(cmd("cmd-collonly-1", killswitch.ActionIsolateHost, me), f.collector), killswitch.RefuseUnderApproved},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.acts.count()
			res := r.Handle(ctx, &tc.signed)
			if res.Status != killswitch.StatusRefused || res.Refusal != tc.want {
				t.Fatalf("result %+v, want refused %s", res, tc.want)
			}
			if f.acts.count() != before {
				t.Fatal("a refused command ran")
			}
			got := f.alerts.take()
			if len(got) != 1 {
				t.Fatalf("%d alerts, want 1", len(got))
			}
			a := got[0]
			// What the pipeline stamps on every event it is handed.
			a.Host = event.Host{ID: "till-7", Name: "till-7"}
			a.Agent = event.Agent{ID: "a", Type: event.AgentType, Version: "test"}
			if err := a.Validate(); err != nil {
				t.Fatalf("alert is not a valid event: %v", err)
			}
			if a.Rule.Ruleset != "killswitch" || a.Tillwatch.KillSwitch.Refusal != tc.want {
				t.Fatalf("alert %+v %+v", a.Rule, a.Tillwatch.KillSwitch)
			}
			// Redelivered, it is refused again but not alerted twice.
			if res := r.Handle(ctx, &tc.signed); res.Status != killswitch.StatusRefused || len(f.alerts.take()) != 0 {
				t.Fatalf("redelivered bad command: %+v", res)
			}
		})
	}

	// Approved by two responders, the reversing action runs.
	ok := sign(cmd("cmd-approved-1", killswitch.ActionEnableRMM, me), f.alice, f.bob)
	if res := r.Handle(ctx, &ok); res.Status != killswitch.StatusOK {
		t.Fatalf("two-responder command: %+v", res)
	}

	// After a restart the replay cache still knows what ran.
	r2 := f.receiver(t)
	runs := f.acts.count()
	if res := r2.Handle(ctx, &first); res.Status != killswitch.StatusOK || f.acts.count() != runs {
		t.Fatalf("after restart: %+v, ran again: %v", res, f.acts.count() != runs)
	}
	rp := sign(replayed, f.collector)
	if res := r2.Handle(ctx, &rp); res.Refusal != killswitch.RefuseReplayed {
		t.Fatalf("replay after restart: %+v", res)
	}
}

// TestStolenTokenKillIsNotDeliveredUntilAResponderSigns: a responder token
// alone asks the real collector for kill-process on this till; nothing
// reaches the sensor until a responder key signs it, then it runs.
func TestStolenTokenKillIsNotDeliveredUntilAResponderSigns(t *testing.T) {
	f := newFixture(t)
	r := f.receiver(t)
	ctx := context.Background()
	tok := f.coll.Client(f.coll.Token(api.RoleResponder))
	st, err := tok.IssueCommand(ctx, api.IssueRequest{Action: killswitch.ActionKillProcess,
		Targets: killswitch.Targets{Hosts: []string{"till-7"}}, Params: map[string]string{"name": "pos.exe"}, Reason: "stolen token"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Command.State == store.CommandActive || len(st.Command.Signed.Signatures) != 0 {
		t.Fatalf("a token alone got %s with %d signatures", st.Command.State, len(st.Command.Signed.Signatures))
	}
	cmds, err := f.up.PollCommands(ctx, time.Second)
	if err != nil || len(cmds) != 0 {
		t.Fatalf("delivered before any responder signed: %d commands, %v", len(cmds), err)
	}
	if _, err := tok.ApproveCommand(ctx, st.Command.ID, killswitch.Sign(f.alice, st.Command.Signed.Payload)); err != nil {
		t.Fatal(err)
	}
	cmds, err = f.up.PollCommands(ctx, 5*time.Second)
	if err != nil || len(cmds) != 1 {
		t.Fatalf("after alice signed: %d commands, %v", len(cmds), err)
	}
	if res := r.Handle(ctx, &cmds[0]); res.Status != killswitch.StatusOK || f.acts.count() != 1 {
		t.Fatalf("signed by a responder: %+v", res)
	}
}

// TestOneKeyCannotExhaustThisTillThroughACompromisedCollector: a
// collector that skips its own count delivers command after command signed
// by one responder key; the sensor's durable ledger refuses the one over
// the key's budget on this host (also after a restart) and alerts, and a
// second responder's signature still gets through.
func TestOneKeyCannotExhaustThisTillThroughACompromisedCollector(t *testing.T) {
	f := newFixture(t)
	p := killswitch.Policy{BudgetCommands: 3}
	r := f.receiverWith(t, p)
	ctx := context.Background()
	now := time.Now().UTC()
	kill := func(id string, keys ...ed25519.PrivateKey) killswitch.Signed {
		c := killswitch.Command{V: killswitch.Version, ID: id, IssuedAt: now, NotBefore: now, NotAfter: now.Add(time.Hour),
			Issuer: "responder:x", Targets: killswitch.Targets{Hosts: []string{"till-7"}}, Action: killswitch.ActionKillProcess,
			Params: map[string]string{"name": "pos.exe"}}
		pl, err := c.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		s := killswitch.Signed{Payload: pl}
		for _, k := range keys {
			s.AddSignature(killswitch.Sign(k, pl))
		}
		return s
	}
	for i := range 3 {
		s := kill(fmt.Sprintf("cmd-alice-%d", i), f.alice)
		if res := r.Handle(ctx, &s); res.Status != killswitch.StatusOK {
			t.Fatalf("command %d by alice alone: %+v", i, res)
		}
	}
	r = f.receiverWith(t, p) // restarted
	over := kill("cmd-alice-over", f.alice)
	if res := r.Handle(ctx, &over); res.Status != killswitch.StatusRefused || res.Refusal != killswitch.RefuseOverBudget {
		t.Fatalf("fourth command by alice alone: %+v, want refused over-budget", res)
	}
	if f.acts.count() != 3 {
		t.Fatalf("%d actions ran, want 3", f.acts.count())
	}
	if a := f.alerts.take(); len(a) != 1 || a[0].Tillwatch.KillSwitch.Refusal != killswitch.RefuseOverBudget {
		t.Fatalf("alerts %+v, want one over-budget refusal", a)
	}
	both := kill("cmd-alice-bob", f.alice, f.bob)
	if res := r.Handle(ctx, &both); res.Status != killswitch.StatusOK {
		t.Fatalf("approved by two responders: %+v", res)
	}
}
