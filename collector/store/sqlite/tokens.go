// Enrolment and API tokens, stored as SHA-256 digests only.

package sqlite

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
)

// TokenPrefix starts every token (store.TokenPrefix).
const TokenPrefix = store.TokenPrefix

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *Store) insertToken(ctx context.Context, db execer, role, hostID string, expires time.Time, maxUses int) (string, error) {
	tok := store.NewToken()
	var exp sql.NullInt64
	if !expires.IsZero() {
		exp = sql.NullInt64{Int64: expires.UnixNano(), Valid: true}
	}
	_, err := db.ExecContext(ctx,
		`INSERT INTO tokens (hash, role, host_id, created_at, expires_at, max_uses) VALUES (?, ?, ?, ?, ?, ?)`,
		store.HashToken(tok), role, hostID, s.now().UnixNano(), exp, max(maxUses, 0))
	if err != nil {
		return "", fmt.Errorf("sqlite: store token: %w", err)
	}
	return tok, nil
}

// CreateToken implements store.Store.
func (s *Store) CreateToken(ctx context.Context, role, hostID string, expires time.Time, maxUses int) (string, error) {
	if err := store.ValidRole(role, hostID); err != nil {
		return "", err
	}
	return s.insertToken(ctx, s.w, role, hostID, expires, maxUses)
}

// Tokens implements store.Store.
func (s *Store) Tokens(ctx context.Context) ([]store.TokenInfo, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT hash, role, host_id, created_at, expires_at, uses, max_uses, revoked FROM tokens ORDER BY created_at, hash`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: tokens: %w", err)
	}
	defer rows.Close()
	var out []store.TokenInfo
	for rows.Next() {
		var (
			t       store.TokenInfo
			hash    string
			created int64
			expires sql.NullInt64
		)
		if err := rows.Scan(&hash, &t.Role, &t.HostID, &created, &expires, &t.Uses, &t.MaxUses, &t.Revoked); err != nil {
			return nil, fmt.Errorf("sqlite: tokens: %w", err)
		}
		t.ID, t.CreatedAt = store.TokenID(hash), time.Unix(0, created).UTC()
		if expires.Valid {
			t.ExpiresAt = time.Unix(0, expires.Int64).UTC()
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken implements store.Store.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	if len(id) != store.TokenIDLen {
		return store.ErrUnknownToken
	}
	res, err := s.w.ExecContext(ctx, `UPDATE tokens SET revoked = 1 WHERE substr(hash, 1, ?) = ?`, store.TokenIDLen, id)
	if err != nil {
		return fmt.Errorf("sqlite: revoke token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return store.ErrUnknownToken
	}
	s.creds.Forget()
	return nil
}

// CredentialsGeneration is the credentials generation: it moves whenever a
// token row changes (revocation, a use, a re-enrolment's revocation of the
// host's previous credential), whoever wrote it.
func (s *Store) CredentialsGeneration(ctx context.Context) (int64, error) {
	var g int64
	if err := s.st.credGen.QueryRowContext(ctx).Scan(&g); err != nil {
		return 0, fmt.Errorf("sqlite: credentials generation: %w", err)
	}
	return g, nil
}

// Authenticate implements store.Store.
func (s *Store) Authenticate(ctx context.Context, token string) (string, string, error) {
	if !strings.HasPrefix(token, TokenPrefix) {
		return "", "", store.ErrUnknownToken
	}
	want := []byte(store.HashToken(token))
	// A remembered agent credential saves the read below on every request
	// of a sensor; a revocation reaches it within store.CredentialWindow.
	if role, hostID, ok := s.creds.Get(string(want)); ok {
		return role, hostID, nil
	}
	stamp, cache := s.creds.Stamp()
	var (
		stored, role, hostID string
		expires              sql.NullInt64
		revoked              bool
		uses, maxUses        int
	)
	err := s.st.authenticate.QueryRowContext(ctx, string(want)).
		Scan(&stored, &role, &hostID, &expires, &revoked, &uses, &maxUses)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", store.ErrUnknownToken
	}
	if err != nil {
		return "", "", fmt.Errorf("sqlite: authenticate: %w", err)
	}
	// The index lookup already matched; the constant-time compare keeps the
	// final decision free of early-exit timing whatever the index does.
	if subtle.ConstantTimeCompare([]byte(stored), want) != 1 || revoked {
		return "", "", store.ErrUnknownToken
	}
	if expires.Valid && s.now().UnixNano() >= expires.Int64 {
		return "", "", &store.TokenExpiredError{At: time.Unix(0, expires.Int64)}
	}
	if maxUses > 0 && uses >= maxUses {
		return "", "", store.ErrTokenUsedUp
	}
	if cache && role == api.RoleAgent {
		var exp time.Time
		if expires.Valid {
			exp = time.Unix(0, expires.Int64)
		}
		s.creds.Put(string(want), stamp, role, hostID, exp)
	}
	return role, hostID, nil
}
