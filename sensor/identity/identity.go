// Package identity keeps who this sensor is: its host id and, once
// enrolled, its agent id and collector credential, in the state dir.
package identity

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/internal/atomicfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// File is the identity file's name in the state dir (mode 0600: it holds
// the credential).
const File = "identity.json"

// Identity is what enrolment gave this sensor.
type Identity struct {
	HostID       string    `json:"host_id"`
	AgentID      string    `json:"agent_id,omitempty"`
	Credential   string    `json:"credential,omitempty"`
	CollectorURL string    `json:"collector_url,omitempty"`
	EnrolledAt   time.Time `json:"enrolled_at,omitzero"`
	// CredentialExpires is when the collector stops taking Credential
	// (zero: never); the sensor renews it before.
	CredentialExpires time.Time `json:"credential_expires,omitzero"`
	// HostKey is the secret this host id is bound to on the collector:
	// made once, before the first enrolment, and presented at every
	// enrolment and renewal. Another machine with an enrolment token but
	// not this key cannot enrol as this host.
	HostKey string `json:"host_key,omitempty"`
	// CommandKeys are the collector's kill-switch keys, pinned at the
	// first enrolment with this collector and kept across re-enrolments.
	CommandKeys []killswitch.PublicKey `json:"command_keys,omitempty"`
}

// Enrolled reports whether the identity holds a credential for url.
func (id Identity) Enrolled(url string) bool {
	return id.Credential != "" && id.CollectorURL == url
}

// NewHostKey returns a new host key: 256 random bits.
func NewHostKey() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return "twhk_" + base64.RawURLEncoding.EncodeToString(b)
}

// Load reads the identity from stateDir; a missing file is an empty identity.
func Load(stateDir string) (Identity, error) {
	var id Identity
	raw, err := os.ReadFile(filepath.Join(stateDir, File))
	if errors.Is(err, os.ErrNotExist) {
		return id, nil
	}
	if err != nil {
		return id, fmt.Errorf("identity: %w", err)
	}
	if err := json.Unmarshal(raw, &id); err != nil {
		return id, fmt.Errorf("identity %s is corrupt (%v): remove it to enrol again", filepath.Join(stateDir, File), err)
	}
	return id, nil
}

// Save writes the identity atomically with mode 0600.
func Save(stateDir string, id Identity) error {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	raw, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(stateDir, File), raw, 0o600)
}

// HostID decides the host identity: the override if given, else the id
// already kept in the state dir, else /etc/machine-id, else a new random id
// (kept so it survives restarts).
func HostID(stateDir, override, machineIDPath string) (string, error) {
	if override != "" {
		return override, nil
	}
	id, err := Load(stateDir)
	if err != nil {
		return "", err
	}
	if id.HostID != "" {
		return id.HostID, nil
	}
	if raw, err := os.ReadFile(machineIDPath); err == nil {
		if m := string(bytes.TrimSpace(raw)); len(m) >= 16 {
			return m, nil
		}
	}
	id.HostID = event.NewID()
	if err := Save(stateDir, id); err != nil {
		return "", err
	}
	return id.HostID, nil
}

// ReadToken reads a token file: one line, surrounding space ignored.
func ReadToken(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("enroll token: %w", err)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" || strings.ContainsAny(tok, " \n\t") {
		return "", fmt.Errorf("enroll token %s: want one token on one line", path)
	}
	return tok, nil
}
