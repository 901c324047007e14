package uplink

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/collectortest"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/sensor/identity"
)

func newUplink(t *testing.T, c *collectortest.Collector, token, hostID, stateDir string) *Uplink {
	t.Helper()
	tokFile := ""
	if token != "" {
		tokFile = filepath.Join(t.TempDir(), "enroll.token")
		if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := client.New(client.Config{URL: c.URL, CAFile: c.CAFile, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	u, err := New(Options{Client: cl, URL: c.URL, StateDir: stateDir, TokenFile: tokFile,
		Request: api.EnrollRequest{HostID: hostID, HostName: hostID, AgentVersion: "test"}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func alertLine(t *testing.T, host string) []byte {
	t.Helper()
	ev := event.Event{
		Timestamp: time.Now().UTC(), ECS: event.ECS{Version: event.ECSVersion},
		Event: event.Meta{Kind: event.KindAlert, ID: event.NewID(), Category: []string{"process"}, Type: []string{"start"}, Action: "x", Severity: 10, RiskScore: 10},
		Rule:  &event.Rule{ID: "R-1", Name: "r", Ruleset: event.RulesetSigma}, Threat: &event.Threat{Framework: "MITRE ATT&CK"},
		Host: event.Host{ID: host, Name: host}, Agent: event.Agent{ID: "a", Type: event.AgentType, Version: "test"},
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return append(raw, '\n')
}

func TestEnrolKeepsCredentialAndSends(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	state := t.TempDir()
	u := newUplink(t, c, c.Token(api.RoleSensor), "till-1", state)
	resp, err := u.SendEvents(context.Background(), alertLine(t, "till-1"))
	if err != nil || resp.Accepted != 1 {
		t.Fatalf("send: %+v %v", resp, err)
	}
	fi, err := os.Stat(filepath.Join(state, identity.File))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v mode %v", err, fi.Mode())
	}
	// A restarted sensor uses the kept credential; no token needed.
	again := newUplink(t, c, "", "till-1", state)
	if !again.Enrolled() {
		t.Fatal("kept identity not loaded")
	}
	if _, err := again.SendEvents(context.Background(), alertLine(t, "till-1")); err != nil {
		t.Fatalf("send with kept credential: %v", err)
	}
	if n := len(c.Alerts("till-1")); n != 2 {
		t.Errorf("collector holds %d alerts, want 2", n)
	}
}

func TestWrongTokenIsPermanentAndSaysWhatToDo(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	u := newUplink(t, c, "tw_wrong", "till-2", t.TempDir())
	err := u.Enroll(context.Background(), false)
	if err == nil || !Permanent(err) {
		t.Fatalf("want a permanent error, got %v", err)
	}
	if !strings.Contains(err.Error(), "token create --role sensor") {
		t.Errorf("error does not tell the operator what to do: %v", err)
	}
	noToken := newUplink(t, c, "", "till-3", t.TempDir())
	if err := noToken.Enroll(context.Background(), false); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("no token: %v", err)
	}
}

func TestReenrolsWhenCollectorForgetsTheCredential(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	tok := c.Token(api.RoleSensor)
	u := newUplink(t, c, tok, "till-4", t.TempDir())
	if err := u.Enroll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	old := u.Identity().Credential
	// Another enrolment of the same host revokes the first credential.
	if _, err := c.Client(tok).Enroll(context.Background(), api.EnrollRequest{HostID: "till-4", HostName: "x", AgentVersion: "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.SendEvents(context.Background(), alertLine(t, "till-4")); err != nil {
		t.Fatalf("send after revocation should re-enrol and succeed: %v", err)
	}
	if u.Identity().Credential == old {
		t.Error("credential not replaced")
	}
}
