package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
)

// TestRevocationReachesTheCollectorWithinTheWindow: agent credentials are
// remembered (store.CredentialCache), yet a revocation written by another
// process on the same database file (the collector's CLI while the server
// runs) is refused within store.CredentialWindow, and one written through
// the store itself, or a re-enrolment replacing the credential, at once.
func TestRevocationReachesTheCollectorWithinTheWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "tw.db")
	server, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	cli, err := Open(path, Options{}) // another process, as far as the server can tell
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	enroll := func(host string) string {
		t.Helper()
		r, err := server.Enroll(ctx, api.EnrollRequest{HostID: host, HostName: host}, store.Enroller{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Credential
	}
	accepted := func(tok string) bool {
		t.Helper()
		role, host, err := server.Authenticate(ctx, tok)
		if err != nil && !errors.Is(err, store.ErrUnknownToken) {
			t.Fatal(err)
		}
		return err == nil && role == api.RoleAgent && host != ""
	}
	waitFresh := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, ok := server.creds.Stamp(); ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the credentials generation was never read")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFresh()

	// Revoked by the other process: refused within the window.
	a := enroll("till-a")
	for range 3 {
		if !accepted(a) {
			t.Fatal("a fresh credential was refused")
		}
	}
	if _, _, ok := server.creds.Get(store.HashToken(a)); !ok {
		t.Fatal("a confirmed agent credential was not remembered")
	}
	if err := cli.RevokeToken(ctx, store.TokenID(store.HashToken(a))); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	for accepted(a) {
		if time.Since(revoked) > store.CredentialWindow+2*store.CredentialPoll {
			t.Fatalf("a credential revoked by another process was still accepted after %v", time.Since(revoked))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("revocation by another process took effect after %v", time.Since(revoked).Round(time.Millisecond))

	// Revoked through the store itself: at once.
	b := enroll("till-b")
	if !accepted(b) || !accepted(b) {
		t.Fatal("a fresh credential was refused")
	}
	if err := server.RevokeToken(ctx, store.TokenID(store.HashToken(b))); err != nil {
		t.Fatal(err)
	}
	if accepted(b) {
		t.Error("a credential revoked through this store was accepted after the revocation")
	}

	// Re-enrolment replaces the host's credential: the old one at once.
	c1 := enroll("till-c")
	if !accepted(c1) || !accepted(c1) {
		t.Fatal("a fresh credential was refused")
	}
	c2 := enroll("till-c")
	if accepted(c1) {
		t.Error("the credential a re-enrolment replaced was accepted")
	}
	if !accepted(c2) {
		t.Error("the new credential was refused")
	}
}
