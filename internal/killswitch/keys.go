package killswitch

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Key roles. A collector key signs automatic and console-issued commands;
// a responder key belongs to one person and is what M-of-N approvals count.
const (
	RoleCollector = "collector"
	RoleResponder = "responder"
)

// KeyID names a public key: the first 16 hex digits of its SHA-256. It is
// derived, never trusted from the wire: a signature's key id only selects
// which pinned key to try.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// PublicKey is one pinned key.
type PublicKey struct {
	ID   string            `json:"id"`
	Role string            `json:"role"`
	Key  ed25519.PublicKey `json:"key"`
	// Name is a label for people (a responder's name, "collector").
	Name string `json:"name,omitempty"`
	// NotAfter retires a key during rotation; zero means no end.
	NotAfter time.Time `json:"not_after,omitzero"`
}

// KeySet is the set of keys a sensor pins. The zero value trusts nothing.
type KeySet struct {
	keys map[string]PublicKey
}

// NewKeySet builds a set, checking every key's id against its bytes.
func NewKeySet(keys ...PublicKey) (*KeySet, error) {
	ks := &KeySet{keys: make(map[string]PublicKey, len(keys))}
	for _, k := range keys {
		if err := ks.Add(k); err != nil {
			return nil, err
		}
	}
	return ks, nil
}

// Add pins k. Adding the same key again (same id and role) is a no-op; the
// same key under another role is refused, as one key must not count twice.
func (ks *KeySet) Add(k PublicKey) error {
	if len(k.Key) != ed25519.PublicKeySize {
		return fmt.Errorf("key %q: not an Ed25519 public key (%d bytes)", k.Name, len(k.Key))
	}
	if k.Role != RoleCollector && k.Role != RoleResponder {
		return fmt.Errorf("key %q: role %q is neither %s nor %s", k.Name, k.Role, RoleCollector, RoleResponder)
	}
	id := KeyID(k.Key)
	if k.ID != "" && k.ID != id {
		return fmt.Errorf("key %q: id %s does not match the key (%s)", k.Name, k.ID, id)
	}
	k.ID = id
	if ks.keys == nil {
		ks.keys = map[string]PublicKey{}
	}
	if old, ok := ks.keys[id]; ok && old.Role != k.Role {
		return fmt.Errorf("key %s is pinned as %s already; one key cannot also be a %s", id, old.Role, k.Role)
	}
	ks.keys[id] = k
	return nil
}

// Lookup returns the pinned key with that id.
func (ks *KeySet) Lookup(id string) (PublicKey, bool) {
	if ks == nil {
		return PublicKey{}, false
	}
	k, ok := ks.keys[id]
	return k, ok
}

// Keys returns the pinned keys.
func (ks *KeySet) Keys() []PublicKey {
	if ks == nil {
		return nil
	}
	out := make([]PublicKey, 0, len(ks.keys))
	for _, k := range ks.keys {
		out = append(out, k)
	}
	return out
}

// Len is the number of pinned keys.
func (ks *KeySet) Len() int {
	if ks == nil {
		return 0
	}
	return len(ks.keys)
}

// PEM block types of the key files `tillwatch keys gen` writes.
const (
	pemPrivate = "PRIVATE KEY" // PKCS #8
	pemPublic  = "PUBLIC KEY"  // PKIX
)

// GenerateKey writes dir/name.key (0600) and dir/name.pub (0644) and
// returns the public key's id. It refuses to overwrite an existing key.
func GenerateKey(dir, name string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	keyPath := filepath.Join(dir, name+".key")
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Bytes: der}), 0o600); err != nil {
		return "", err
	}
	if err := writeNew(filepath.Join(dir, name+".pub"), pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: pubDER}), 0o644); err != nil {
		return "", err
	}
	return KeyID(pub), nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists; refusing to overwrite a key", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadPrivateKey reads a PKCS #8 PEM Ed25519 private key. The file must not
// be readable by group or others.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	return ParsePrivateKey(b)
}

// ParsePrivateKey parses a PKCS #8 PEM Ed25519 private key.
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != pemPrivate {
		return nil, errors.New("signing key: not a PEM \"PRIVATE KEY\" (make one with `tillwatch keys gen`)")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key: %T is not Ed25519", k)
	}
	return priv, nil
}

// LoadPublicKey reads a PKIX PEM Ed25519 public key file.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kill-switch key: %w", err)
	}
	pub, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("kill-switch key %s: %w", path, err)
	}
	return pub, nil
}

// ParsePublicKey parses a PKIX PEM Ed25519 public key.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != pemPublic {
		return nil, errors.New("not a PEM \"PUBLIC KEY\" (the .pub file `tillwatch keys gen` writes)")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%T is not Ed25519", k)
	}
	return pub, nil
}

// MarshalPublicKey is the PKIX PEM form of pub.
func MarshalPublicKey(pub ed25519.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // cannot fail for a well-formed Ed25519 key
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Bytes: der})
}
