package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// TestKillSwitchFlow drives the kill-switch API end to end on a real
// collector: a protective command reaches a long-polling sensor at once and
// verifies against the key it pinned at enrolment; a reversing command
// waits for two distinct responders before any sensor sees it; status shows
// each host's acknowledgement.
func TestKillSwitchFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	enrolled, err := e.client(e.token(api.RoleSensor)).Enroll(ctx,
		api.EnrollRequest{HostID: "till-1", HostName: "till-1", AgentVersion: "1", Labels: map[string]string{"store": "s1"}, HostKey: "hk-test-0123456789abcdef0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	if len(enrolled.CommandKeys) != 1 || enrolled.CommandKeys[0].Role != killswitch.RoleCollector {
		t.Fatalf("enrolment handed out keys %+v, want the collector's one", enrolled.CommandKeys)
	}
	e.enroll("till-2")
	sensor := e.client(enrolled.Credential)
	responder := e.client(e.token(api.RoleResponder))

	// What the sensor pins: the collector key from enrolment plus the
	// responder keys its operator deployed.
	pinned, err := killswitch.NewKeySet(append(enrolled.CommandKeys,
		responderKey(e.alice, "alice"), responderKey(e.bob, "bob"))...)
	if err != nil {
		t.Fatal(err)
	}
	v := &killswitch.Verifier{Keys: pinned, HostID: "till-1", Labels: map[string]string{"store": "s1"}, Now: e.clk.Now}

	polled := make(chan []killswitch.Signed, 1)
	start := time.Now()
	go func() {
		cmds, err := sensor.PendingCommands(ctx, 20*time.Second)
		if err != nil {
			t.Error(err)
		}
		polled <- cmds
	}()
	time.Sleep(200 * time.Millisecond) // the poll is waiting
	issued, err := responder.IssueCommand(ctx, api.IssueRequest{
		Action: killswitch.ActionDisableRMM, Targets: killswitch.Targets{Labels: map[string]string{"store": "s1"}},
		Params: map[string]string{"product": "kaseya-vsa"}, Reason: "VSA pushing payloads",
	})
	if err != nil {
		t.Fatal(err)
	}
	// A responder token alone gets nothing that acts signed: one
	// responder key's approval activates the protective command.
	if issued.Command.State != store.CommandPendingApproval || issued.Command.Required != 1 {
		t.Fatalf("token-issued disable-rmm: %s, %d required; want pending for one responder", issued.Command.State, issued.Command.Required)
	}
	if issued, err = responder.ApproveCommand(ctx, issued.Command.ID, killswitch.Sign(e.alice, issued.Command.Signed.Payload)); err != nil {
		t.Fatal(err)
	}
	if issued.Command.State != store.CommandActive {
		t.Fatalf("approved disable-rmm state %s, want active", issued.Command.State)
	}
	var got []killswitch.Signed
	select {
	case got = <-polled:
	case <-time.After(15 * time.Second):
		t.Fatal("long-poll did not return the command")
	}
	if len(got) != 1 {
		t.Fatalf("polled %d commands", len(got))
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("long-poll answered after %s; it should wake on issue", waited)
	}
	c, _, err := v.Verify(&got[0])
	if err != nil {
		t.Fatalf("sensor refuses what the collector delivered: %v", err)
	}
	if c.ID != issued.Command.ID || c.Params["product"] != "kaseya-vsa" || c.Reason != "VSA pushing payloads" {
		t.Fatalf("verified command %+v", c)
	}
	if err := sensor.AckCommand(ctx, c.ID, killswitch.Result{Status: killswitch.StatusOK, Affected: []string{"kaseya-vsa"}}); err != nil {
		t.Fatal(err)
	}
	st, err := responder.Command(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Hosts) != 1 || st.Hosts[0].HostID != "till-1" || st.Hosts[0].State != store.HostAcked ||
		st.Hosts[0].Result.Status != killswitch.StatusOK {
		t.Fatalf("status %+v: the label selected only till-1, which acknowledged", st.Hosts)
	}

	// A reversing command needs two distinct responders.
	rel, err := responder.IssueCommand(ctx, api.IssueRequest{Action: killswitch.ActionEnableRMM,
		Targets: killswitch.Targets{Hosts: []string{"till-1"}}, Params: map[string]string{"product": "kaseya-vsa"}})
	if err != nil {
		t.Fatal(err)
	}
	if rel.Command.State != store.CommandPendingApproval || rel.Command.Required != killswitch.DefaultApprovals {
		t.Fatalf("reversing command %+v", rel.Command)
	}
	pending := func() int {
		t.Helper()
		cmds, err := sensor.PendingCommands(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(cmds)
	}
	if n := pending(); n != 0 {
		t.Fatalf("an unapproved command was delivered (%d)", n)
	}
	payload := rel.Command.Signed.Payload
	for range 2 { // the same responder twice counts once
		st, err := responder.ApproveCommand(ctx, rel.Command.ID, killswitch.Sign(e.alice, payload))
		if err != nil {
			t.Fatal(err)
		}
		if st.Command.State != store.CommandPendingApproval {
			t.Fatalf("one responder activated a reversing command")
		}
	}
	if n := pending(); n != 0 {
		t.Fatalf("a once-approved command was delivered (%d)", n)
	}
	st, err = responder.ApproveCommand(ctx, rel.Command.ID, killswitch.Sign(e.bob, payload))
	if err != nil {
		t.Fatal(err)
	}
	if st.Command.State != store.CommandActive {
		t.Fatalf("two responders did not activate it: %s", st.Command.State)
	}
	cmds, err := sensor.PendingCommands(ctx, 0)
	if err != nil || len(cmds) != 1 {
		t.Fatalf("approved command not delivered: %d %v", len(cmds), err)
	}
	if _, signers, err := v.Verify(&cmds[0]); err != nil || len(signers.Responders) != 2 {
		t.Fatalf("sensor verification of the approved command: %+v %v", signers, err)
	}

	// An approval by a key the collector does not know is refused.
	if _, err := responder.ApproveCommand(ctx, rel.Command.ID, killswitch.Sign(newPriv(t), payload)); err == nil {
		t.Fatal("approval by an unknown key accepted")
	}
	list, err := responder.Commands(ctx, 10)
	if err != nil || len(list) != 2 || list[0].ID != rel.Command.ID {
		t.Fatalf("commands list %+v %v", list, err)
	}
}

// TestLongPollAnswerIsBounded: however many commands are pending for a
// host, one long-poll answer carries at most api.MaxPendingCommands (the
// bound the sensor reads up to); the rest come with the next poll.
func TestLongPollAnswerIsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	sensor := e.client(e.enroll("till-1"))
	total := api.MaxPendingCommands + 3
	var responder *client.Client
	for i := range total {
		if i%command.DefaultIssueRate == 0 { // a fresh token per rate-limit burst
			responder = e.client(e.token(api.RoleResponder))
		}
		if _, err := responder.IssueCommand(ctx, api.IssueRequest{Action: killswitch.ActionScan, Targets: killswitch.Targets{All: true}}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := sensor.PendingCommands(ctx, 0)
	if err != nil || len(first) != api.MaxPendingCommands {
		t.Fatalf("first poll: %d commands, %v; want %d", len(first), err, api.MaxPendingCommands)
	}
	for _, s := range first {
		c, err := killswitch.ParseCanonical(s.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if err := sensor.AckCommand(ctx, c.ID, killswitch.Result{Status: killswitch.StatusOK}); err != nil {
			t.Fatal(err)
		}
	}
	rest, err := sensor.PendingCommands(ctx, 0)
	if err != nil || len(rest) != 3 {
		t.Fatalf("second poll: %d commands, %v; want 3", len(rest), err)
	}
}
