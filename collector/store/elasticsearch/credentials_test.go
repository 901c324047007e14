package elasticsearch

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
)

// waitRemembered polls until s answers cred from its cache (its first
// read of the generation done), within a generous bound.
func waitRemembered(t *testing.T, s *Store, cred string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := s.Authenticate(ctx, cred); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := s.creds.Get(store.HashToken(cred)); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the credential was never remembered")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// refusedWithin authenticates cred on s until it is refused and checks
// that no attempt started later than the window after changed was
// accepted.
func refusedWithin(t *testing.T, s *Store, cred string, changed time.Time) {
	t.Helper()
	ctx := context.Background()
	for {
		start := time.Now()
		_, _, err := s.Authenticate(ctx, cred)
		if errors.Is(err, store.ErrUnknownToken) {
			t.Logf("refused %v after the change", start.Sub(changed).Round(time.Millisecond))
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if late := start.Sub(changed); late >= store.CredentialWindow {
			t.Fatalf("the old credential was still accepted %v after the change (window %v)", late, store.CredentialWindow)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRevocationReachesEveryCollectorWithinTheWindow: collector a
// remembers a sensor's credential; revoking it through collector b (or
// replacing it by a re-enrolment there) makes a refuse it within
// store.CredentialWindow; revoking through a itself, at once.
func TestRevocationReachesEveryCollectorWithinTheWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := OpenTest(t, Options{})
	b, err := Open(ctx, Options{URL: esURL(t), Namespace: a.ns})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	t.Run("revoked elsewhere", func(t *testing.T) {
		resp, err := a.Enroll(ctx, enrollReq("till-r1"), store.Enroller{})
		if err != nil {
			t.Fatal(err)
		}
		waitRemembered(t, a, resp.Credential)
		if err := b.RevokeToken(ctx, store.TokenID(store.HashToken(resp.Credential))); err != nil {
			t.Fatal(err)
		}
		refusedWithin(t, a, resp.Credential, time.Now())
	})
	t.Run("replaced elsewhere", func(t *testing.T) {
		resp, err := a.Enroll(ctx, enrollReq("till-r2"), store.Enroller{})
		if err != nil {
			t.Fatal(err)
		}
		waitRemembered(t, a, resp.Credential)
		if _, err := b.Enroll(ctx, enrollReq("till-r2"), store.Enroller{}); err != nil {
			t.Fatal(err)
		}
		refusedWithin(t, a, resp.Credential, time.Now())
	})
	t.Run("revoked here", func(t *testing.T) {
		resp, err := a.Enroll(ctx, enrollReq("till-r3"), store.Enroller{})
		if err != nil {
			t.Fatal(err)
		}
		waitRemembered(t, a, resp.Credential)
		if err := a.RevokeToken(ctx, store.TokenID(store.HashToken(resp.Credential))); err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Authenticate(ctx, resp.Credential); !errors.Is(err, store.ErrUnknownToken) {
			t.Fatalf("right after its own revocation the collector answered %v", err)
		}
	})
}
