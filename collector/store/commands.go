package store

import (
	"context"
	"errors"
	"time"

	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// Command states as the collector tracks them.
const (
	// CommandPendingApproval waits for more responder signatures; it is
	// never delivered in that state.
	CommandPendingApproval = "pending-approval"
	// CommandActive is signed enough and delivered to its hosts.
	CommandActive = "active"
)

// Per-host delivery states of a command.
const (
	HostPending   = "pending"   // not fetched yet
	HostDelivered = "delivered" // fetched, no acknowledgement yet
	HostAcked     = "acked"     // answered; Result says how
)

// CommandRecord is one kill-switch command as the collector keeps it: the
// signed envelope (payload and every signature so far) plus the fields the
// payload holds, copied out for listing.
type CommandRecord struct {
	ID       string            `json:"id"`
	Action   string            `json:"action"`
	Targets  string            `json:"targets"` // human form, killswitch.Targets.String
	Issuer   string            `json:"issuer"`
	Reason   string            `json:"reason,omitempty"`
	IssuedAt time.Time         `json:"issued_at"`
	NotAfter time.Time         `json:"not_after"`
	State    string            `json:"state"`
	Required int               `json:"required_approvals"` // distinct responder signatures needed (0: one of any pinned key)
	Signed   killswitch.Signed `json:"signed"`
}

// CommandHost is one targeted host's state for a command.
type CommandHost struct {
	HostID      string             `json:"host_id"`
	State       string             `json:"state"`
	DeliveredAt time.Time          `json:"delivered_at,omitzero"`
	AckedAt     time.Time          `json:"acked_at,omitzero"`
	Result      *killswitch.Result `json:"result,omitempty"`
}

// CommandStore keeps kill-switch commands: the audit trail (who issued and
// approved what, for which reason) and each targeted host's delivery and
// acknowledgement. Every store.Store backend implements it; the state lives
// in the store so that collectors sharing one Elasticsearch deliver each
// other's commands.
type CommandStore interface {
	// CreateCommand stores a new command with the hosts it addresses
	// (resolved when it is issued).
	CreateCommand(ctx context.Context, rec CommandRecord, hosts []string) error

	// UpdateCommand replaces the signatures and state of a stored command
	// (an approval), but only if it still holds prevSignatures signatures,
	// the number the caller read: it is compare-and-swap, so two approvals
	// at once cannot both start from the same record and lose one
	// signature. ErrCommandConflict if the count changed (read again and
	// retry), ErrUnknownCommand if it was never stored. Signatures are
	// only ever added, so their count is the record's version.
	UpdateCommand(ctx context.Context, id string, prevSignatures int, signed killswitch.Signed, state string) error

	// Command returns one command and its hosts, by host id.
	Command(ctx context.Context, id string) (CommandRecord, []CommandHost, error)

	// Commands lists the newest commands first, at most limit.
	Commands(ctx context.Context, limit int) ([]CommandRecord, error)

	// PendingCommands returns the active, unexpired commands addressed to
	// hostID that it has not acknowledged, oldest first, and marks them
	// delivered. A delivered command is handed out again until it is
	// acknowledged (at-least-once; the sensor's replay cache answers a
	// redelivery with its recorded result).
	PendingCommands(ctx context.Context, hostID string, now time.Time) ([]killswitch.Signed, error)

	// PendingCommandsFor is PendingCommands for many hosts in one look:
	// when a command becomes deliverable, the collector asks it once for
	// every sensor long-polling there, not once per sensor. The answer maps
	// each host with something pending to its commands, oldest first
	// (hosts with nothing are absent), marked delivered as PendingCommands
	// marks them.
	//
	// If answer is not nil it is called once with that map (read-only;
	// empty when nothing is pending) as soon as it is known, before the
	// deliveries are marked: the caller answers its sensors while the
	// store writes. With 10,000 sensors woken at once the mark is a large
	// write, and a sensor's command must not wait for bookkeeping. The
	// order is safe because the mark only moves deliveries still pending
	// to delivered: an acknowledgement that comes back before the mark is
	// never undone. An error of the mark is returned after answer ran.
	PendingCommandsFor(ctx context.Context, hostIDs []string, now time.Time, answer func(map[string][]killswitch.Signed)) (map[string][]killswitch.Signed, error)

	// AckCommand records hostID's result; ErrUnknownCommand if that host
	// was not addressed. A later ack replaces an earlier one.
	AckCommand(ctx context.Context, id, hostID string, r killswitch.Result, at time.Time) error

	// CommandsGeneration is a number that changes whenever a command
	// becomes deliverable; it is cheap, so each collector polls it once a
	// second to wake long-polling sensors, including for commands issued
	// through another collector on the same store.
	CommandsGeneration(ctx context.Context) (int64, error)
}

// ErrUnknownCommand is returned for a command id the store does not hold.
var ErrUnknownCommand = errors.New("unknown command")

// ErrCommandConflict is returned by UpdateCommand when the command changed
// since the caller read it.
var ErrCommandConflict = errors.New("command changed since it was read")
