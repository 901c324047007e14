package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/watchdog"
)

const (
	keyTillA = "hk-till-a-0123456789abcdef0123456789abcdef"
	keyRoot  = "hk-attacker-0123456789abcdef0123456789abcdef"
)

// TestRootOnOneTillCannotEnrolAsAnother is the takeover: root on one till
// reads the fleet's enrolment token and enrols with another till's host id.
// The collector refuses it (409), the real till's credential keeps working,
// the claimant gets no credential, and the SOC gets an alert about the
// claimed host.
func TestRootOnOneTillCannotEnrolAsAnother(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	fleet := e.token(api.RoleSensor)
	real, err := e.client(fleet).Enroll(ctx, api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: keyTillA})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.client(fleet).Enroll(ctx, api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: keyRoot})
	if got := httpStatus(err); got != http.StatusConflict {
		t.Fatalf("enrolment as till-a with another key: status %d (%v), want 409", got, err)
	}
	if !strings.Contains(err.Error(), "--host till-a") {
		t.Errorf("refusal does not name the operator's way out: %v", err)
	}
	if _, err := e.client(real.Credential).Heartbeat(ctx, api.Heartbeat{AgentVersion: "1"}); err != nil {
		t.Fatalf("the real till lost its credential to the claim: %v", err)
	}
	alerts, err := e.st.QueryAlerts(ctx, store.AlertFilter{HostID: "till-a", RuleID: watchdog.RuleEnrolConflict})
	if err != nil || len(alerts) != 1 {
		t.Fatalf("enrolment-conflict alerts for till-a: %d (%v), want 1", len(alerts), err)
	}
	// The real till enrols again with its own key (a lost credential).
	again, err := e.client(fleet).Enroll(ctx, api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: keyTillA})
	if err != nil || again.AgentID != real.AgentID {
		t.Fatalf("re-enrolment with the bound key: %+v %v", again, err)
	}
}

// TestReinstalledTillEnrolsWithAHostSpecificToken: the operator's way for a
// till that lost its host key: a single-use token for that host only
// re-binds it, and enrols no other host.
func TestReinstalledTillEnrolsWithAHostSpecificToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.client(e.token(api.RoleSensor)).Enroll(ctx, api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: keyTillA}); err != nil {
		t.Fatal(err)
	}
	hostTok, err := e.st.CreateToken(ctx, api.RoleSensor, "till-a", time.Now().Add(time.Hour), 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.client(hostTok).Enroll(ctx, api.EnrollRequest{HostID: "till-b", HostName: "till-b", AgentVersion: "1", HostKey: keyRoot})
	if got := httpStatus(err); got != http.StatusForbidden {
		t.Fatalf("host-specific token used for another host: %d (%v), want 403", got, err)
	}
	fresh := "hk-reinstalled-0123456789abcdef0123456789abcdef"
	resp, err := e.client(hostTok).Enroll(ctx, api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: fresh})
	if err != nil {
		t.Fatalf("reinstalled till with its host token: %v", err)
	}
	if _, err := e.client(resp.Credential).Heartbeat(ctx, api.Heartbeat{AgentVersion: "1"}); err != nil {
		t.Fatal(err)
	}
	// Single use: the token is spent.
	_, err = e.client(hostTok).Enroll(ctx, api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: keyRoot})
	if got := httpStatus(err); got != http.StatusUnauthorized {
		t.Fatalf("second use of a single-use token: %d (%v), want 401", got, err)
	}
}

// TestFleetTokenCannotEnrolUnlimitedFakeHosts: an enrolment token with a
// use bound enrols that many hosts and then no more, so a token read off a
// till cannot mint a crowd of fake hosts (three of which would set off the
// campaign rule's fleet-wide response).
func TestFleetTokenCannotEnrolUnlimitedFakeHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tok, err := e.st.CreateToken(ctx, api.RoleSensor, "", time.Now().Add(time.Hour), 2)
	if err != nil {
		t.Fatal(err)
	}
	for i, host := range []string{"fake-1", "fake-2", "fake-3"} {
		_, err := e.client(tok).Enroll(ctx, api.EnrollRequest{HostID: host, HostName: host, AgentVersion: "1", HostKey: keyRoot})
		if i < 2 && err != nil {
			t.Fatalf("enrolment %d of 2: %v", i+1, err)
		}
		if i == 2 && httpStatus(err) != http.StatusUnauthorized {
			t.Fatalf("third enrolment with a two-use token: %v, want 401", err)
		}
	}
}

// TestCredentialRenewsWithItselfAndExpires: agent credentials expire; the
// sensor renews with its own credential and host key (no enrolment token),
// and a stolen credential without the host key cannot renew.
func TestCredentialRenewsWithItselfAndExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(o *server.Options) { o.CredentialTTL = time.Hour })
	ctx := context.Background()
	first, err := e.client(e.token(api.RoleSensor)).Enroll(ctx, api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: keyTillA})
	if err != nil {
		t.Fatal(err)
	}
	if want := e.clk.Now().Add(time.Hour); !first.CredentialExpires.Equal(want.UTC()) {
		t.Fatalf("credential expires %v, want %v", first.CredentialExpires, want)
	}
	_, err = e.client(first.Credential).Enroll(ctx, api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: keyRoot})
	if got := httpStatus(err); got != http.StatusConflict {
		t.Fatalf("renewal with a stolen credential and another key: %d (%v), want 409", got, err)
	}
	e.clk.Add(50 * time.Minute)
	renewed, err := e.client(first.Credential).Enroll(ctx, api.EnrollRequest{HostID: "till-a", HostName: "till-a", AgentVersion: "1", HostKey: keyTillA})
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if _, err := e.client(first.Credential).Heartbeat(ctx, api.Heartbeat{AgentVersion: "1"}); httpStatus(err) != http.StatusUnauthorized {
		t.Fatalf("the renewed-away credential still works: %v", err)
	}
	e.clk.Add(61 * time.Minute)
	_, err = e.client(renewed.Credential).Heartbeat(ctx, api.Heartbeat{AgentVersion: "1"})
	if httpStatus(err) != http.StatusUnauthorized || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("heartbeat with an expired credential: %v, want 401 expired", err)
	}
}
