package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/tillwatch/tillwatch/collector/api"
)

// TokenPrefix starts every token so secret scanners and humans recognise
// one; a bearer without it is refused before any lookup.
const TokenPrefix = "tw_"

// NewToken returns a new secret: 256 random bits.
func NewToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// HashToken is what stores keep instead of the token: its hex sha256.
func HashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// KeyMatches compares a host key with the hash a host is bound to, in
// constant time.
func KeyMatches(boundHash, key string) bool {
	return subtle.ConstantTimeCompare([]byte(boundHash), []byte(HashToken(key))) == 1
}

// NewAgentID returns a random UUID v4 for a newly enrolled sensor.
func NewAgentID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// ValidRole checks a role and its host binding: agent credentials are
// bound to a host and must be; an enrolment token may be (it then enrols
// only that host); other roles are not.
func ValidRole(role, hostID string) error {
	switch role {
	case api.RoleAgent:
		if hostID == "" {
			return fmt.Errorf("%w: agent credentials need a host id", ErrInvalidRole)
		}
	case api.RoleSensor:
	case api.RoleAnalyst, api.RoleResponder:
		if hostID != "" {
			return fmt.Errorf("%w: only agent credentials and enrolment tokens are bound to a host", ErrInvalidRole)
		}
	default:
		return fmt.Errorf("%w %q", ErrInvalidRole, role)
	}
	return nil
}

// BindKey is the host-key rule every backend applies at enrolment: given
// whether the host exists and the key hash it is bound to, it returns the
// hash to keep, or ErrHostKeyMismatch.
//
//   - A new host is bound to the key it presents.
//   - An existing host accepts its own key again (a sensor that lost its
//     credential, or renews it).
//   - A rebind (host-specific enrolment token) replaces the key.
//   - A host enrolled before host keys ("" bound) takes its first key only
//     from a renewal, which proves it holds the host's credential; an
//     enrolment token alone cannot claim it.
func BindKey(exists bool, boundHash, key string, by Enroller) (string, error) {
	keyHash := ""
	if key != "" {
		keyHash = HashToken(key)
	}
	switch {
	case !exists || by.Rebind:
		return keyHash, nil
	case boundHash == "" && (key == "" || by.Renewal):
		return keyHash, nil
	case boundHash != "" && key != "" && KeyMatches(boundHash, key):
		return boundHash, nil
	}
	return "", ErrHostKeyMismatch
}
