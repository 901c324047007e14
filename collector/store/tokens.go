package store

import (
	"crypto/rand"
	"crypto/sha256"
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

// NewAgentID returns a random UUID v4 for a newly enrolled sensor.
func NewAgentID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// ValidRole checks a role and its host binding: only agent credentials
// are bound to a host, and they must be.
func ValidRole(role, hostID string) error {
	switch role {
	case api.RoleAgent:
		if hostID == "" {
			return fmt.Errorf("%w: agent credentials need a host id", ErrInvalidRole)
		}
	case api.RoleSensor, api.RoleAnalyst, api.RoleResponder:
		if hostID != "" {
			return fmt.Errorf("%w: only agent credentials are bound to a host", ErrInvalidRole)
		}
	default:
		return fmt.Errorf("%w %q", ErrInvalidRole, role)
	}
	return nil
}
