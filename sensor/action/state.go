package action

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tillwatch/tillwatch/internal/atomicfile"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// StateFile is the persisted state under StateDir/action.
const StateFile = "state.json"

const stateVersion = 1

// persisted is what survives a sensor restart.
type persisted struct {
	Version int `json:"version"`
	// Disabled are the products disable-rmm disabled, by id.
	Disabled map[string]*disabledProduct `json:"disabled,omitempty"`
	// Isolation is set while the host is isolated.
	Isolation *isolationState `json:"isolation,omitempty"`
}

// disabledProduct records what disable-rmm did, so enable-rmm undoes exactly
// that and nothing else.
type disabledProduct struct {
	CommandID  string    `json:"command_id,omitempty"`
	DisabledAt time.Time `json:"disabled_at"`
	// Masks are the masks this sensor wrote.
	Masks []maskRecord `json:"masks,omitempty"`
	// SystemdDisabled are units that were enabled and that we disabled.
	SystemdDisabled []string `json:"systemd_disabled,omitempty"`
	// SystemdStopped are units that were active and that we stopped.
	SystemdStopped []string `json:"systemd_stopped,omitempty"`
}

// maskRecord is one mask: SystemdDir/Unit -> /dev/null.
type maskRecord struct {
	Unit string `json:"unit"`
	// PrevTarget is the target of the symlink the mask replaced ("" when
	// nothing was there); enable-rmm puts it back.
	PrevTarget string `json:"prev_target,omitempty"`
}

// isolationState is the isolation to re-apply at start.
type isolationState struct {
	CommandID  string           `json:"command_id,omitempty"`
	Since      time.Time        `json:"since"`
	Collectors []netip.AddrPort `json:"collectors"`
	DNS        []netip.Addr     `json:"dns,omitempty"`
}

// loadState reads dir/state.json; a missing file is an empty state. A corrupt
// file is an error: starting over would silently re-enable products and drop
// the isolation.
func loadState(dir string) (*persisted, error) {
	f := filepath.Join(dir, StateFile)
	st := &persisted{Version: stateVersion, Disabled: map[string]*disabledProduct{}}
	raw, err := os.ReadFile(f)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("action: read state: %w", err)
	}
	if err := json.Unmarshal(raw, st); err != nil {
		return nil, fmt.Errorf("action: state file %s is corrupt (%v): fix it or move it away to start with no disabled products and no isolation", f, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("action: state file %s has version %d, this sensor reads %d", f, st.Version, stateVersion)
	}
	if st.Disabled == nil {
		st.Disabled = map[string]*disabledProduct{}
	}
	return st, nil
}

// save writes the state atomically (temp file, fsync, rename, fsync dir).
func (e *Executor) save() error {
	raw, err := json.MarshalIndent(e.st, "", "  ")
	if err != nil {
		return fmt.Errorf("action: encode state: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(e.dir, StateFile), raw, 0o600); err != nil {
		return fmt.Errorf("action: save state: %w", err)
	}
	return nil
}

// publishDisabled refreshes the lock-free copy DisabledProduct reads.
func (e *Executor) publishDisabled() {
	m := make(map[string]bool, len(e.st.Disabled))
	for id := range e.st.Disabled {
		m[id] = true
	}
	e.disabled.Store(&m)
}

// syncDir makes a rename or unlink in dir durable. Windows cannot open a
// directory for syncing; NTFS journals the rename itself.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
