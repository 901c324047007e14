package elasticsearch

// The credentials generation (store.CredentialCache): one document of
// tillwatch-generations-<ns>, _id "credentials", whose _version every
// change able to end a credential bumps after it is written (revocation,
// enrolment). Each collector reads it in real time once a second; a
// change empties the collectors' remembered credentials.

import (
	"context"
	"fmt"

	"github.com/tillwatch/tillwatch/collector/store"
)

const (
	kindGenerations  = "generations"
	credentialsGenID = "credentials"
)

// CredentialsGeneration is the credentials generation: 0 before the first
// change, then larger after each.
func (s *Store) CredentialsGeneration(ctx context.Context) (int64, error) {
	r, err := getDoc[struct{}](ctx, s, s.stateIndex(kindGenerations), credentialsGenID)
	if err != nil {
		return 0, fmt.Errorf("elasticsearch: credentials generation: %w", err)
	}
	if !r.Found {
		return 0, nil
	}
	return r.Version, nil
}

// credentialsChanged is called after a credential change is written: this
// collector forgets what it remembered at once, the others when they read
// the bumped generation.
func (s *Store) credentialsChanged(ctx context.Context) error {
	s.creds.Forget()
	op := bulkOp{action: "index", id: credentialsGenID, doc: map[string]any{"changed_at": s.now().UTC()}}
	items, err := s.bulkWrite(ctx, s.stateIndex(kindGenerations), []bulkOp{op}, "")
	if err == nil {
		err = bulkFailures(items, []bulkOp{op}, nil)
	}
	if err != nil {
		return fmt.Errorf("the change is written, but other collectors were not told (they may accept the old credential for up to %s): %w",
			credentialMaxAge, err)
	}
	return nil
}

// credentialMaxAge bounds the use of a remembered credential should the
// generation fail to move after a change (credentialsChanged failed).
const credentialMaxAge = store.CredentialMaxAge
