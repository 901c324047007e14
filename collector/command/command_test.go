package command_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"path/filepath"
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
		{killswitch.ActionDisableRMM, killswitch.Targets{All: true}, store.CommandActive, 6, 0},
		{killswitch.ActionIsolateHost, killswitch.Targets{Labels: map[string]string{"store": "s001"}}, store.CommandPendingApproval, 2, 2},
		{killswitch.ActionKillProcess, killswitch.Targets{Hosts: []string{"s002-a", "s003-a"}}, store.CommandActive, 2, 0},
	}
	for _, tc := range cases {
		rec, err := f.svc.Issue(ctx, "responder:test", command.Request{Action: tc.action, Targets: tc.targets, Params: map[string]string{"name": "x"}})
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
	if f.notified != 2 {
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
