package elasticsearch

// Tokens: creation, the credential check, enrolment-token use, revocation.

import (
	"context"
	"crypto/subtle"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
)

type tokenDoc struct {
	Role      string     `json:"role"`
	HostID    string     `json:"host_id"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Revoked   bool       `json:"revoked"`
	Uses      int        `json:"uses,omitempty"`
	MaxUses   int        `json:"max_uses,omitempty"`
}

func (s *Store) putToken(ctx context.Context, role, hostID string, expires time.Time, maxUses int) (tok, hash string, err error) {
	tok = store.NewToken()
	hash = store.HashToken(tok)
	doc := tokenDoc{Role: role, HostID: hostID, CreatedAt: s.now().UTC(), MaxUses: max(maxUses, 0)}
	if !expires.IsZero() {
		exp := expires.UTC()
		doc.ExpiresAt = &exp
	}
	err = s.do(ctx, esapi.CreateRequest{Index: s.stateIndex("tokens"), DocumentID: hash,
		Body: jsonBody(doc)}, nil)
	if err != nil {
		return "", "", fmt.Errorf("elasticsearch: store token: %w", err)
	}
	return tok, hash, nil
}

// CreateToken implements store.Store.
func (s *Store) CreateToken(ctx context.Context, role, hostID string, expires time.Time, maxUses int) (string, error) {
	if err := store.ValidRole(role, hostID); err != nil {
		return "", err
	}
	tok, _, err := s.putToken(ctx, role, hostID, expires, maxUses)
	if err == nil && role != api.RoleAgent {
		err = s.audit(ctx, "token-created", "creation", "", map[string]any{"tillwatch": map[string]any{"token_role": role}})
	}
	return tok, err
}

// Authenticate implements store.Store. An agent credential of an enrolled
// host is valid only while it is the host's current one: re-enrolment
// revokes the previous credential in the same write that records the new
// one, so no window exists in which both work.
func (s *Store) Authenticate(ctx context.Context, token string) (string, string, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return "", "", store.ErrUnknownToken
	}
	want := store.HashToken(token)
	// A remembered agent credential saves the two reads below on every
	// request of a sensor; a revocation reaches it within
	// store.CredentialWindow (credentials.go).
	if role, hostID, ok := s.creds.Get(want); ok {
		return role, hostID, nil
	}
	stamp, cache := s.creds.Stamp()
	r, err := getDoc[tokenDoc](ctx, s, s.stateIndex("tokens"), want)
	if err != nil {
		return "", "", fmt.Errorf("elasticsearch: authenticate: %w", err)
	}
	t := r.Source
	if !r.Found || t.Revoked {
		return "", "", store.ErrUnknownToken
	}
	if t.ExpiresAt != nil && !s.now().Before(*t.ExpiresAt) {
		return "", "", &store.TokenExpiredError{At: *t.ExpiresAt}
	}
	if t.MaxUses > 0 && t.Uses >= t.MaxUses {
		return "", "", store.ErrTokenUsedUp
	}
	if t.Role == api.RoleAgent {
		h, err := getDoc[hostDoc](ctx, s, s.stateIndex("hosts"), t.HostID)
		if err != nil {
			return "", "", fmt.Errorf("elasticsearch: authenticate: %w", err)
		}
		// A host that exists holds exactly one live credential; an agent
		// token created for a host not (yet) enrolled stands on its own.
		if h.Found && h.Source.CredentialHash != "" &&
			subtle.ConstantTimeCompare([]byte(h.Source.CredentialHash), []byte(want)) != 1 {
			return "", "", store.ErrUnknownToken
		}
		if cache {
			var exp time.Time
			if t.ExpiresAt != nil {
				exp = *t.ExpiresAt
			}
			s.creds.Put(want, stamp, t.Role, t.HostID, exp)
		}
	}
	return t.Role, t.HostID, nil
}

// tokenUseRetries bounds the compare-and-swap on a token document: a
// fleet enrolling at once with one token contends on it.
const tokenUseRetries = 200

// useToken counts one use of the enrolment token with hash, written with
// if_seq_no so concurrent enrolments cannot overrun max_uses;
// ErrTokenUsedUp if none is left. (The node may run without scripting, so
// no scripted update.)
func (s *Store) useToken(ctx context.Context, hash string) error {
	index := s.stateIndex("tokens")
	for attempt := range tokenUseRetries {
		r, err := getDoc[tokenDoc](ctx, s, index, hash)
		if err != nil {
			return fmt.Errorf("elasticsearch: count token use: %w", err)
		}
		if !r.Found || r.Source.Revoked {
			return store.ErrUnknownToken
		}
		t := r.Source
		if t.MaxUses > 0 && t.Uses >= t.MaxUses {
			return store.ErrTokenUsedUp
		}
		t.Uses++
		err = s.do(ctx, esapi.IndexRequest{Index: index, DocumentID: hash, Body: jsonBody(t),
			IfSeqNo: esapi.IntPtr(int(r.SeqNo)), IfPrimaryTerm: esapi.IntPtr(int(r.PrimaryTerm))}, nil)
		if statusOf(err) == http.StatusConflict {
			s.m.conflicts.Inc()
			// Spread the contenders out a little.
			time.Sleep(time.Duration(mrand.IntN(1+min(attempt, 20))) * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("elasticsearch: count token use: %w", err)
		}
		return nil
	}
	return fmt.Errorf("elasticsearch: count token use: still conflicting after %d attempts", tokenUseRetries)
}

func (s *Store) revokeTokenDoc(ctx context.Context, hash string) error {
	err := s.do(ctx, esapi.UpdateRequest{Index: s.stateIndex("tokens"), DocumentID: hash, Refresh: "true",
		Body: jsonBody(map[string]any{"doc": map[string]any{"revoked": true}})}, nil)
	if statusOf(err) == http.StatusNotFound {
		return store.ErrUnknownToken
	}
	return err
}

// Tokens implements store.Store.
func (s *Store) Tokens(ctx context.Context) ([]store.TokenInfo, error) {
	if err := s.refresh(ctx, s.stateIndex("tokens")); err != nil {
		return nil, fmt.Errorf("elasticsearch: tokens: %w", err)
	}
	var r struct {
		Hits struct {
			Hits []struct {
				ID     string   `json:"_id"`
				Source tokenDoc `json:"_source"`
			} `json:"hits"`
		} `json:"hits"`
	}
	err := s.do(ctx, esapi.SearchRequest{Index: []string{s.stateIndex("tokens")}, Body: jsonBody(map[string]any{
		"size": maxTokensListed, "sort": []any{map[string]any{"created_at": "asc"}},
	})}, &r)
	if statusOf(err) == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: tokens: %w", err)
	}
	out := make([]store.TokenInfo, 0, len(r.Hits.Hits))
	for _, h := range r.Hits.Hits {
		t := h.Source
		ti := store.TokenInfo{ID: store.TokenID(h.ID), Role: t.Role, HostID: t.HostID, CreatedAt: t.CreatedAt,
			Uses: t.Uses, MaxUses: t.MaxUses, Revoked: t.Revoked}
		if t.ExpiresAt != nil {
			ti.ExpiresAt = *t.ExpiresAt
		}
		out = append(out, ti)
	}
	return out, nil
}

// maxTokensListed bounds Tokens: one search page.
const maxTokensListed = 10000

// RevokeToken implements store.Store.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	if len(id) != store.TokenIDLen {
		return store.ErrUnknownToken
	}
	// _id takes no prefix query: match the id against the listing.
	var r struct {
		Hits struct {
			Hits []struct {
				ID string `json:"_id"`
			} `json:"hits"`
		} `json:"hits"`
	}
	if err := s.refresh(ctx, s.stateIndex("tokens")); err != nil {
		return fmt.Errorf("elasticsearch: revoke token: %w", err)
	}
	err := s.do(ctx, esapi.SearchRequest{Index: []string{s.stateIndex("tokens")}, Body: jsonBody(map[string]any{
		"size": maxTokensListed, "_source": false, "query": map[string]any{"term": map[string]any{"revoked": false}},
	})}, &r)
	if statusOf(err) == http.StatusNotFound {
		return store.ErrUnknownToken
	}
	if err != nil {
		return fmt.Errorf("elasticsearch: revoke token: %w", err)
	}
	revoked := false
	for _, h := range r.Hits.Hits {
		if store.TokenID(h.ID) != id {
			continue
		}
		if err := s.revokeTokenDoc(ctx, h.ID); err != nil {
			return fmt.Errorf("elasticsearch: revoke token: %w", err)
		}
		revoked = true
	}
	if !revoked {
		return store.ErrUnknownToken
	}
	if err := s.credentialsChanged(ctx); err != nil {
		return fmt.Errorf("elasticsearch: revoke token: %w", err)
	}
	return s.audit(ctx, "token-revoked", "deletion", "", map[string]any{"tillwatch": map[string]any{"token_id": id}})
}
