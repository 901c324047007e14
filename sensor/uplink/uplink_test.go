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
	"github.com/tillwatch/tillwatch/collector/store"
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
	// Another enrolment of the same host (with its own host key: the same
	// machine) revokes the first credential.
	if _, err := c.Client(tok).Enroll(context.Background(), api.EnrollRequest{HostID: "till-4", HostName: "x", AgentVersion: "t", HostKey: u.Identity().HostKey}); err != nil {
		t.Fatal(err)
	}
	if _, err := u.SendEvents(context.Background(), alertLine(t, "till-4")); err != nil {
		t.Fatalf("send after revocation should re-enrol and succeed: %v", err)
	}
	if u.Identity().Credential == old {
		t.Error("credential not replaced")
	}
}

// TestAnotherTillCannotTakeOverTheHostID: root on another till, holding
// the same enrolment token, enrols as this till with its own host key. The
// collector refuses it, this sensor keeps sending with its credential, and
// the host key it keeps never changed.
func TestAnotherTillCannotTakeOverTheHostID(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	tok := c.Token(api.RoleSensor)
	state := t.TempDir()
	u := newUplink(t, c, tok, "till-6", state)
	if err := u.Enroll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	key := u.Identity().HostKey
	if len(key) < 32 {
		t.Fatalf("host key %q", key)
	}
	intruder := newUplink(t, c, tok, "till-6", t.TempDir())
	err := intruder.Enroll(context.Background(), false)
	if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "--host till-6") {
		t.Fatalf("enrolment as till-6 from another machine: %v, want a 409 naming the host-specific token", err)
	}
	if _, err := u.SendEvents(context.Background(), alertLine(t, "till-6")); err != nil {
		t.Fatalf("the real till lost its credential: %v", err)
	}
	kept, err := identity.Load(state)
	if err != nil || kept.HostKey != key {
		t.Fatalf("host key changed: %v", err)
	}
}

// TestRenewsCredentialBeforeItExpires: in the last third of its life the
// credential is traded for a new one without the enrolment token (the
// token file is gone).
func TestRenewsCredentialBeforeItExpires(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	state := t.TempDir()
	u := newUplink(t, c, c.Token(api.RoleSensor), "till-7", state)
	if err := u.Enroll(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	first := u.Identity()
	if first.CredentialExpires.IsZero() {
		t.Fatal("the collector issued a credential that never expires")
	}
	os.Remove(u.o.TokenFile)
	u.o.TokenFile = ""
	// Two thirds of the life have passed (the sensor's clock).
	u.Now = func() time.Time {
		return first.CredentialExpires.Add(-first.CredentialExpires.Sub(first.EnrolledAt) / 4)
	}
	if _, err := u.SendEvents(context.Background(), alertLine(t, "till-7")); err != nil {
		t.Fatal(err)
	}
	now := u.Identity()
	if now.Credential == first.Credential || now.HostKey != first.HostKey {
		t.Fatalf("credential not renewed (or host key changed)")
	}
	kept, err := identity.Load(state)
	if err != nil || kept.Credential != now.Credential {
		t.Fatalf("renewed credential not kept: %v", err)
	}
}

// TestUpgradedSensorBindsItsHostKey: a sensor enrolled before host keys
// (a credential that never expires, no key) renews once on its first run
// and so binds a key; from then on an enrolment token cannot claim its
// host id.
func TestUpgradedSensorBindsItsHostKey(t *testing.T) {
	t.Parallel()
	c := collectortest.Start(t, "", "")
	ctx := context.Background()
	old, err := c.Store.Enroll(ctx, api.EnrollRequest{HostID: "till-8", HostName: "till-8", AgentVersion: "old"}, store.Enroller{})
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	if err := identity.Save(state, identity.Identity{HostID: "till-8", AgentID: old.AgentID, Credential: old.Credential,
		CollectorURL: c.URL, EnrolledAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	u := newUplink(t, c, "", "till-8", state)
	if _, err := u.SendEvents(ctx, alertLine(t, "till-8")); err != nil {
		t.Fatal(err)
	}
	now := u.Identity()
	if now.HostKey == "" || now.CredentialExpires.IsZero() || now.Credential == old.Credential {
		t.Fatalf("upgraded sensor did not bind a key and renew: %+v", now)
	}
	_, err = c.Client(c.Token(api.RoleSensor)).Enroll(ctx, api.EnrollRequest{HostID: "till-8", HostName: "till-8", AgentVersion: "t",
		HostKey: "hk-intruder-0123456789abcdef0123456789abcdef"})
	if err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("claim of the upgraded host: %v, want 409", err)
	}
}
