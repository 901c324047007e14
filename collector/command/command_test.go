package command_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func key(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k ed25519.PrivateKey, name string) killswitch.PublicKey {
	return killswitch.PublicKey{Role: killswitch.RoleResponder, Key: k.Public().(ed25519.PublicKey), Name: name}
}

type fixture struct {
	svc                   *command.Service
	st                    *sqlite.Store
	clk                   *clock
	collector, alice, bob ed25519.PrivateKey
	notified              int
}

func newFixture(t *testing.T, hosts ...string) *fixture {
	t.Helper()
	f := &fixture{clk: &clock{t: time.Now().UTC()}, collector: key(t), alice: key(t), bob: key(t)}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "c.db"), sqlite.Options{Now: f.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	for _, h := range hosts {
		if _, err := st.Enroll(context.Background(), api.EnrollRequest{HostID: h, HostName: h, AgentVersion: "1",
			Labels: map[string]string{"store": h[:4]}}, store.Enroller{}); err != nil {
			t.Fatal(err)
		}
	}
	f.svc, err = command.New(command.Options{
		Store: st, Key: f.collector, Now: f.clk.Now, IssueRate: 3,
		Responders: []killswitch.PublicKey{pub(f.alice, "alice"), pub(f.bob, "bob")},
		Notify:     func() { f.notified++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestIssueFollowsBlastRadius: what one key may order is signed and active
// at once, the rest waits for approvals; targets resolve to enrolled hosts.
func TestIssueFollowsBlastRadius(t *testing.T) {
	f := newFixture(t, "s001-a", "s001-b", "s002-a", "s003-a", "s004-a", "s005-a")
	ctx := context.Background()
	cases := []struct {
		action   string
		targets  killswitch.Targets
		state    string
		hosts    int
		required int
	}{
		{killswitch.ActionScan, killswitch.Targets{All: true}, store.CommandActive, 6, 0},
		{killswitch.ActionIsolateHost, killswitch.Targets{Labels: map[string]string{"store": "s001"}}, store.CommandPendingApproval, 2, 2},
		{killswitch.ActionKillProcess, killswitch.Targets{Hosts: []string{"s002-a", "s003-a"}}, store.CommandPendingApproval, 2, 1},
	}
	for _, tc := range cases {
		var params map[string]string
		if tc.action == killswitch.ActionKillProcess {
			params = map[string]string{"name": "x"}
		}
		rec, err := f.svc.Issue(ctx, "responder:test", command.Request{Action: tc.action, Targets: tc.targets, Params: params})
		if err != nil {
			t.Fatalf("%s: %v", tc.action, err)
		}
		_, hosts, err := f.st.Command(ctx, rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != tc.state || len(hosts) != tc.hosts || rec.Required != tc.required {
			t.Fatalf("%s on %s: state %s, %d hosts, %d required; want %s, %d, %d",
				tc.action, tc.targets, rec.State, len(hosts), rec.Required, tc.state, tc.hosts, tc.required)
		}
		if tc.state == store.CommandActive && len(rec.Signed.Signatures) != 1 {
			t.Fatalf("active command carries %d signatures", len(rec.Signed.Signatures))
		}
		if tc.state != store.CommandActive && len(rec.Signed.Signatures) != 0 {
			t.Fatal("the collector signed a command it may not order alone")
		}
	}
	if f.notified != 1 {
		t.Fatalf("long-polls woken %d times, want once per active command", f.notified)
	}
	if _, err := f.svc.Issue(ctx, "responder:test", command.Request{Action: killswitch.ActionScan, Targets: killswitch.Targets{All: true}}); !errors.Is(err, command.ErrRateLimited) {
		t.Fatalf("fourth command in a minute at rate 3: %v", err)
	}
	if _, err := f.svc.Issue(ctx, "responder:other", command.Request{Action: killswitch.ActionScan, Targets: killswitch.Targets{Hosts: []string{"nobody"}}}); !errors.Is(err, command.ErrNoTargets) {
		t.Fatalf("no matching host: %v", err)
	}
	if _, err := f.svc.Issue(ctx, "responder:other", command.Request{Action: "reboot", Targets: killswitch.Targets{All: true}}); !errors.Is(err, command.ErrInvalid) {
		t.Fatalf("unknown action: %v", err)
	}
}

// TestApprovals: only configured responder keys count, each once, over the
// stored payload and before expiry; the collector's own key never does.
func TestApprovals(t *testing.T) {
	f := newFixture(t, "s001-a")
	ctx := context.Background()
	rec, err := f.svc.Issue(ctx, "responder:test", command.Request{Action: killswitch.ActionReleaseHost, Targets: killswitch.Targets{All: true}})
	if err != nil {
		t.Fatal(err)
	}
	p := rec.Signed.Payload
	refused := []struct {
		name string
		sig  killswitch.Signature
	}{
		{"the collector's key", killswitch.Sign(f.collector, p)},
		{"an unknown key", killswitch.Sign(key(t), p)},
		{"a responder signing other bytes", killswitch.Sign(f.alice, append([]byte("x"), p...))},
	}
	for _, r := range refused {
		if _, err := f.svc.Approve(ctx, rec.ID, r.sig); !errors.Is(err, command.ErrBadApproval) {
			t.Fatalf("approval by %s: %v", r.name, err)
		}
	}
	got, err := f.svc.Approve(ctx, rec.ID, killswitch.Sign(f.alice, p))
	if err != nil || got.State != store.CommandPendingApproval {
		t.Fatalf("first approval: %+v %v", got.State, err)
	}
	got, err = f.svc.Approve(ctx, rec.ID, killswitch.Sign(f.bob, p))
	if err != nil || got.State != store.CommandActive || len(got.Signed.Signatures) != 2 {
		t.Fatalf("second approval: %s, %d signatures, %v", got.State, len(got.Signed.Signatures), err)
	}

	late, err := f.svc.Issue(ctx, "responder:test", command.Request{Action: killswitch.ActionEnableRMM, Targets: killswitch.Targets{All: true},
		Params: map[string]string{"product": "kaseya-vsa"}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	f.clk.Add(2 * time.Minute)
	if _, err := f.svc.Approve(ctx, late.ID, killswitch.Sign(f.alice, late.Signed.Payload)); !errors.Is(err, command.ErrBadApproval) {
		t.Fatalf("approval after expiry: %v", err)
	}
	if _, err := f.svc.Approve(ctx, "ks-unknown-0000", killswitch.Sign(f.alice, p)); !errors.Is(err, store.ErrUnknownCommand) {
		t.Fatalf("approval of an unknown command: %v", err)
	}
}

// TestConcurrentApprovalsLoseNoSignature: responders who approve the same
// command at the same moment all end up in its signatures (the store's
// compare-and-swap refuses the writes from stale reads and Approve retries
// them), and the command turns active exactly once.
func TestConcurrentApprovalsLoseNoSignature(t *testing.T) {
	clk := &clock{t: time.Now().UTC()}
	st, err := sqlite.Open(filepath.Join(t.TempDir(), "c.db"), sqlite.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if _, err := st.Enroll(ctx, api.EnrollRequest{HostID: "s001-a", HostName: "s001-a"}, store.Enroller{}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var responders []ed25519.PrivateKey
	var pubs []killswitch.PublicKey
	for i := range n {
		k := key(t)
		responders = append(responders, k)
		pubs = append(pubs, pub(k, string(rune('a'+i))))
	}
	var mu sync.Mutex
	activations := 0
	svc, err := command.New(command.Options{Store: st, Key: key(t), Now: clk.Now, IssueRate: 3, Responders: pubs,
		Notify: func() { mu.Lock(); activations++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := svc.Issue(ctx, "responder:test", command.Request{Action: killswitch.ActionReleaseHost, Targets: killswitch.Targets{All: true}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for _, k := range responders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := svc.Approve(ctx, rec.ID, killswitch.Sign(k, rec.Signed.Payload)); err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, _, err := st.Command(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Signed.Signatures) != n || got.State != store.CommandActive {
		t.Fatalf("%d concurrent approvals kept %d signatures (state %s): approvals were lost", n, len(got.Signed.Signatures), got.State)
	}
	if activations != 1 {
		t.Fatalf("command activated %d times, want once", activations)
	}
}

// TestStolenResponderTokenCannotOrderAlone: a responder token without any
// key gets nothing that acts signed by the collector: kill-process on one
// host and disable-rmm fleet-wide wait for a responder signature; only
// scan is active at once. The automatic campaign policy still gets its
// disable-rmm signed by the collector alone, and a pid kill without its
// start time is refused outright.
func TestStolenResponderTokenCannotOrderAlone(t *testing.T) {
	f := newFixture(t, "s001-a", "s001-b")
	ctx := context.Background()
	one := killswitch.Targets{Hosts: []string{"s001-a"}}
	all := killswitch.Targets{All: true}
	cases := []struct {
		name, issuer, action string
		targets              killswitch.Targets
		params               map[string]string
		state                string
	}{
		{"token kill-process on one host", "responder:stolen", killswitch.ActionKillProcess, one, map[string]string{"name": "pos.exe"}, store.CommandPendingApproval},
		{"token quarantine on one host", "responder:stolen", killswitch.ActionQuarantineFile, one, map[string]string{"path": "/srv/pos/db"}, store.CommandPendingApproval},
		{"token disable-rmm on all", "responder:stolen", killswitch.ActionDisableRMM, all, map[string]string{"product": "*"}, store.CommandPendingApproval},
		{"token scan on all", "responder:other", killswitch.ActionScan, all, nil, store.CommandActive},
		{"campaign disable-rmm on all", command.IssuerCampaign, killswitch.ActionDisableRMM, all, map[string]string{"product": "*"}, store.CommandActive},
	}
	for _, tc := range cases {
		rec, err := f.svc.Issue(ctx, tc.issuer, command.Request{Action: tc.action, Targets: tc.targets, Params: tc.params})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if rec.State != tc.state {
			t.Fatalf("%s: state %s, want %s", tc.name, rec.State, tc.state)
		}
		if tc.state == store.CommandPendingApproval && len(rec.Signed.Signatures) != 0 {
			t.Fatalf("%s: the collector signed what a token alone asked for", tc.name)
		}
	}
	_, err := f.svc.Issue(ctx, "responder:x", command.Request{Action: killswitch.ActionKillProcess, Targets: one, Params: map[string]string{"pid": "4242"}})
	if !errors.Is(err, command.ErrInvalid) || !strings.Contains(err.Error(), "start_time") {
		t.Fatalf("pid kill without start_time: %v, want ErrInvalid naming start_time", err)
	}
}

// TestOneKeyCannotIsolateFleetInBatchesOfFive: one responder key may
// isolate at most 5 hosts per command alone, and the collector holds it to
// 10 distinct hosts per hour across commands: the third batch of five
// waits for a second responder, approving old pending commands later does
// not escape the count, and the window rolls.
func TestOneKeyCannotIsolateFleetInBatchesOfFive(t *testing.T) {
	var hosts []string
	for i := range 20 {
		hosts = append(hosts, fmt.Sprintf("s%03d-a", i))
	}
	f := newFixture(t, hosts...)
	ctx := context.Background()
	issue := func(batch []string) store.CommandRecord {
		t.Helper()
		// One token per batch: the issue rate is not what is under test.
		rec, err := f.svc.Issue(ctx, "responder:"+batch[0], command.Request{Action: killswitch.ActionIsolateHost,
			Targets: killswitch.Targets{Hosts: batch}, TTL: 3 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != store.CommandPendingApproval || rec.Required != 1 {
			t.Fatalf("isolate-host on %d hosts: %s, %d required", len(batch), rec.State, rec.Required)
		}
		return rec
	}
	var recs []store.CommandRecord
	for i := 0; i < 20; i += 5 {
		recs = append(recs, issue(hosts[i:i+5]))
	}
	for i, rec := range recs[:2] {
		got, err := f.svc.Approve(ctx, rec.ID, killswitch.Sign(f.alice, rec.Signed.Payload))
		if err != nil || got.State != store.CommandActive {
			t.Fatalf("batch %d by alice alone: %s %v", i, got.State, err)
		}
	}
	got, err := f.svc.Approve(ctx, recs[2].ID, killswitch.Sign(f.alice, recs[2].Signed.Payload))
	if !errors.Is(err, command.ErrOverBudget) || got.State != store.CommandPendingApproval {
		t.Fatalf("third batch of five by alice alone: %s %v, want pending and ErrOverBudget", got.State, err)
	}
	if stored, _, _ := f.st.Command(ctx, recs[2].ID); stored.State != store.CommandPendingApproval || len(stored.Signed.Signatures) != 1 {
		t.Fatalf("stored: %s with %d signatures; want pending with alice's kept", stored.State, len(stored.Signed.Signatures))
	}
	got, err = f.svc.Approve(ctx, recs[2].ID, killswitch.Sign(f.bob, recs[2].Signed.Payload))
	if err != nil || got.State != store.CommandActive {
		t.Fatalf("second responder on the third batch: %s %v", got.State, err)
	}
	// Issued over an hour ago but unexpired: still counts.
	f.clk.Add(61 * time.Minute)
	if _, err := f.svc.Approve(ctx, recs[3].ID, killswitch.Sign(f.alice, recs[3].Signed.Payload)); !errors.Is(err, command.ErrOverBudget) {
		t.Fatalf("approving an old pending batch after the window: %v, want ErrOverBudget", err)
	}
	// Once the earlier commands expired and left the window, the budget is back.
	f.clk.Add(3 * time.Hour)
	fresh := issue(hosts[15:20])
	if got, err := f.svc.Approve(ctx, fresh.ID, killswitch.Sign(f.alice, fresh.Signed.Payload)); err != nil || got.State != store.CommandActive {
		t.Fatalf("after the window: %s %v", got.State, err)
	}
}
