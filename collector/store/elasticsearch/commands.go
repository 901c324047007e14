package elasticsearch

// Kill-switch commands (store.CommandStore) live in two regular indices,
// updated in place, so every collector sharing the cluster delivers every
// command:
//
//   - tillwatch-commands-<ns>: one document per command, _id = command id;
//   - tillwatch-command-hosts-<ns>: one per addressed host, _id = command
//     id + "/" + host id, with its delivery state and the sensor's result.
//
// Documents are read with mget and written with _bulk (one item for a
// single document), so ids travel in request bodies, never in URL paths
// (a host id may hold anything, a "/" is part of every host document's id).
// Read-modify-write uses optimistic concurrency (if_seq_no), as for hosts:
// the test node, like any cluster without lang-painless, runs no scripts.
//
// Visibility: what the hot paths search (a host's open deliveries, the
// generation) is written with refresh=wait_for or followed by a refresh, so
// a call returning means every collector sees it; the listing calls refresh
// what they read first, like the other queries of this store.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

var _ store.CommandStore = (*Store)(nil)

// State index kinds of the command store (stateMappings).
const (
	kindCommands     = "commands"
	kindCommandHosts = "command-hosts"
)

// defaultCommandsLimit is what Commands lists for a limit <= 0 (as SQLite).
const defaultCommandsLimit = 100

// commandDoc is a document of tillwatch-commands-<ns>.
type commandDoc struct {
	ID        string            `json:"id"`
	Action    string            `json:"action"`
	Targets   string            `json:"targets"`
	Issuer    string            `json:"issuer"`
	Reason    string            `json:"reason"`
	IssuedAt  time.Time         `json:"issued_at"`
	NotAfter  time.Time         `json:"not_after"`
	State     string            `json:"state"`
	Required  int               `json:"required"`
	Signed    killswitch.Signed `json:"signed"`
	Activated int64             `json:"activated"` // generation at which it became deliverable; 0 before
	Seq       int64             `json:"seq"`       // creation order
}

func (d commandDoc) record() store.CommandRecord {
	return store.CommandRecord{ID: d.ID, Action: d.Action, Targets: d.Targets, Issuer: d.Issuer, Reason: d.Reason,
		IssuedAt: d.IssuedAt.UTC(), NotAfter: d.NotAfter.UTC(), State: d.State, Required: d.Required, Signed: d.Signed}
}

// commandHostDoc is a document of tillwatch-command-hosts-<ns>.
type commandHostDoc struct {
	CommandID   string             `json:"command_id"`
	HostID      string             `json:"host_id"`
	State       string             `json:"state"`
	NotAfter    time.Time          `json:"not_after"`
	DeliveredAt *time.Time         `json:"delivered_at,omitempty"`
	AckedAt     *time.Time         `json:"acked_at,omitempty"`
	Result      *killswitch.Result `json:"result,omitempty"`
}

func (d commandHostDoc) host() store.CommandHost {
	h := store.CommandHost{HostID: d.HostID, State: d.State, Result: d.Result}
	if d.DeliveredAt != nil {
		h.DeliveredAt = d.DeliveredAt.UTC()
	}
	if d.AckedAt != nil {
		h.AckedAt = d.AckedAt.UTC()
	}
	return h
}

func commandHostID(commandID, hostID string) string { return commandID + "/" + hostID }

func timePtr(t time.Time) *time.Time {
	t = t.UTC()
	return &t
}

// CreateCommand implements store.CommandStore. The host documents are
// written first and the command document last (op_type create, refresh
// wait_for): until it exists the host documents are inert (no poll
// delivers, Command does not know the id), and when it lands, with its
// generation, every host document is already searchable, so a woken
// long-poll finds its command. A failure leaves at most inert host
// documents, which a retry with the same id overwrites.
func (s *Store) CreateCommand(ctx context.Context, rec store.CommandRecord, hosts []string) error {
	if rec.ID == "" {
		return errors.New("elasticsearch: create command: empty id")
	}
	cmdIndex, hostIndex := s.stateIndex(kindCommands), s.stateIndex(kindCommandHosts)
	old, err := getDoc[commandDoc](ctx, s, cmdIndex, rec.ID)
	if err != nil {
		return fmt.Errorf("elasticsearch: create command %s: %w", rec.ID, err)
	}
	if old.Found {
		return fmt.Errorf("elasticsearch: create command %s: a command with this id is already stored", rec.ID)
	}
	seen := make(map[string]bool, len(hosts))
	ops := make([]bulkOp, 0, len(hosts))
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		ops = append(ops, bulkOp{action: "index", id: commandHostID(rec.ID, h), doc: commandHostDoc{
			CommandID: rec.ID, HostID: h, State: store.HostPending, NotAfter: rec.NotAfter.UTC()}})
	}
	if len(ops) > 0 {
		items, err := s.bulkWrite(ctx, hostIndex, ops, "")
		if err != nil {
			return fmt.Errorf("elasticsearch: create command %s: hosts: %w", rec.ID, err)
		}
		if err := bulkFailures(items, ops, nil); err != nil {
			return fmt.Errorf("elasticsearch: create command %s: hosts: %w", rec.ID, err)
		}
		if err := s.refresh(ctx, hostIndex); err != nil {
			return fmt.Errorf("elasticsearch: create command %s: %w", rec.ID, err)
		}
	}
	doc := commandDoc{ID: rec.ID, Action: rec.Action, Targets: rec.Targets, Issuer: rec.Issuer, Reason: rec.Reason,
		IssuedAt: rec.IssuedAt.UTC(), NotAfter: rec.NotAfter.UTC(), State: rec.State, Required: rec.Required, Signed: rec.Signed}
	if doc.Seq, err = s.nextStamp(ctx, "seq"); err != nil {
		return fmt.Errorf("elasticsearch: create command %s: %w", rec.ID, err)
	}
	if rec.State == store.CommandActive {
		if doc.Activated, err = s.nextStamp(ctx, "activated"); err != nil {
			return fmt.Errorf("elasticsearch: create command %s: %w", rec.ID, err)
		}
	}
	conflict, err := s.writeDoc(ctx, cmdIndex, rec.ID, nil, doc, "wait_for")
	if err != nil {
		return fmt.Errorf("elasticsearch: create command %s: %w", rec.ID, err)
	}
	if conflict {
		return fmt.Errorf("elasticsearch: create command %s: a command with this id is already stored", rec.ID)
	}
	err = s.auditEvent(ctx, "configuration", "killswitch-issue", "creation", "success", "", commandAudit(doc, len(ops)))
	if err != nil {
		return fmt.Errorf("elasticsearch: command %s is stored, but its audit record is not: %w", rec.ID, err)
	}
	return nil
}

// UpdateCommand implements store.CommandStore.
func (s *Store) UpdateCommand(ctx context.Context, id string, prevSignatures int, signed killswitch.Signed, state string) error {
	// modifyCommand writes with if_seq_no/if_primary_term, so the count
	// checked here is the one replaced.
	d, err := s.modifyCommand(ctx, id, func(d *commandDoc) error {
		if len(d.Signed.Signatures) != prevSignatures {
			return store.ErrCommandConflict
		}
		d.Signed, d.State = signed, state
		if state == store.CommandActive && d.Activated == 0 {
			n, err := s.nextStamp(ctx, "activated")
			if err != nil {
				return err
			}
			d.Activated = n
		}
		return nil
	})
	if errors.Is(err, store.ErrUnknownCommand) || errors.Is(err, store.ErrCommandConflict) {
		return err
	}
	if err != nil {
		return fmt.Errorf("elasticsearch: update command %s: %w", id, err)
	}
	err = s.auditEvent(ctx, "configuration", "killswitch-approve", "change", "success", "", commandAudit(d, -1))
	if err != nil {
		return fmt.Errorf("elasticsearch: command %s is updated, but its audit record is not: %w", id, err)
	}
	return nil
}

// modifyCommand applies fn to a stored command under optimistic
// concurrency and writes it with refresh=wait_for; ErrUnknownCommand if it
// was never stored.
func (s *Store) modifyCommand(ctx context.Context, id string, fn func(d *commandDoc) error) (commandDoc, error) {
	index := s.stateIndex(kindCommands)
	for range casRetries {
		r, err := getDoc[commandDoc](ctx, s, index, id)
		if err != nil {
			return commandDoc{}, err
		}
		if !r.Found {
			return commandDoc{}, store.ErrUnknownCommand
		}
		d := r.Source
		if err := fn(&d); err != nil {
			return commandDoc{}, err
		}
		conflict, err := s.writeDoc(ctx, index, id, &r.docVersion, d, "wait_for")
		if err != nil {
			return commandDoc{}, err
		}
		if !conflict {
			return d, nil
		}
	}
	return commandDoc{}, fmt.Errorf("still conflicting after %d attempts", casRetries)
}

// nextStamp is a value of field strictly above every stored one: the clock
// in nanoseconds, or the largest stored value plus one when a collector
// with a faster clock wrote that. Stamps are written with refresh=wait_for,
// so the largest is searchable. (A max aggregation would answer a double,
// which cannot hold nanoseconds since 1970 exactly; a sorted search
// answers the stored long.)
func (s *Store) nextStamp(ctx context.Context, field string) (int64, error) {
	top, err := s.topLong(ctx, field)
	if err != nil {
		return 0, err
	}
	return max(time.Now().UnixNano(), top+1), nil
}

// topLong is the largest value of field in the commands index (0 when
// there is no command, or no index).
func (s *Store) topLong(ctx context.Context, field string) (int64, error) {
	var top int64
	err := s.searchPages(ctx, s.stateIndex(kindCommands), map[string]any{
		"_source": []string{field},
		"sort":    []any{map[string]any{field: "desc"}},
	}, 1, func(h rawHit) error {
		var v map[string]int64
		if err := json.Unmarshal(h.Source, &v); err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		top = v[field]
		return nil
	})
	return top, err
}

// CommandsGeneration implements store.CommandStore: the largest activated
// stamp, one sorted search of size 1.
func (s *Store) CommandsGeneration(ctx context.Context) (int64, error) {
	g, err := s.topLong(ctx, "activated")
	if err != nil {
		return 0, fmt.Errorf("elasticsearch: commands generation: %w", err)
	}
	return g, nil
}

// Command implements store.CommandStore. Its hosts are read in
// search_after pages, all of them (up to killswitch.MaxTargets).
func (s *Store) Command(ctx context.Context, id string) (store.CommandRecord, []store.CommandHost, error) {
	cmdIndex, hostIndex := s.stateIndex(kindCommands), s.stateIndex(kindCommandHosts)
	r, err := getDoc[commandDoc](ctx, s, cmdIndex, id)
	if err != nil {
		return store.CommandRecord{}, nil, fmt.Errorf("elasticsearch: command %s: %w", id, err)
	}
	if !r.Found {
		return store.CommandRecord{}, nil, store.ErrUnknownCommand
	}
	if err := s.refresh(ctx, hostIndex); err != nil {
		return store.CommandRecord{}, nil, fmt.Errorf("elasticsearch: command %s: %w", id, err)
	}
	var hosts []store.CommandHost
	err = s.searchPages(ctx, hostIndex, map[string]any{
		"query": map[string]any{"term": map[string]any{"command_id": id}},
		"sort":  []any{map[string]any{"host_id": "asc"}},
	}, 0, func(h rawHit) error {
		var d commandHostDoc
		if err := json.Unmarshal(h.Source, &d); err != nil {
			return fmt.Errorf("host document %s: %w", h.ID, err)
		}
		hosts = append(hosts, d.host())
		return nil
	})
	if err != nil {
		return store.CommandRecord{}, nil, fmt.Errorf("elasticsearch: command %s: %w", id, err)
	}
	// Keyword order is byte order already; sorting in Go keeps the contract
	// independent of the cluster (as Hosts does).
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].HostID < hosts[j].HostID })
	return r.Source.record(), hosts, nil
}

// Commands implements store.CommandStore: newest first, by creation order
// (seq; SQLite's insertion order), then id.
func (s *Store) Commands(ctx context.Context, limit int) ([]store.CommandRecord, error) {
	if limit <= 0 {
		limit = defaultCommandsLimit
	}
	index := s.stateIndex(kindCommands)
	if err := s.refresh(ctx, index); err != nil {
		return nil, fmt.Errorf("elasticsearch: commands: %w", err)
	}
	var out []store.CommandRecord
	err := s.searchPages(ctx, index, map[string]any{
		"sort": []any{map[string]any{"seq": "desc"}, map[string]any{"id": "desc"}},
	}, limit, func(h rawHit) error {
		var d commandDoc
		if err := json.Unmarshal(h.Source, &d); err != nil {
			return fmt.Errorf("command %s: %w", h.ID, err)
		}
		out = append(out, d.record())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: commands: %w", err)
	}
	return out, nil
}

// commandAudit is the part of an issue or approval audit document that
// names the command: tillwatch.killswitch.command_id and .action as the
// event model has them (internal/event KillSwitch), the issuer as ECS
// user.name, the reason as ECS event.reason, and the approval state under
// tillwatch.killswitch (state, required_approvals, signatures; targets and
// hosts, the number addressed, when hosts >= 0).
func commandAudit(d commandDoc, hosts int) map[string]any {
	ks := map[string]any{"command_id": d.ID, "action": d.Action, "state": d.State,
		"required_approvals": d.Required, "signatures": len(d.Signed.Signatures)}
	if hosts >= 0 {
		ks["targets"], ks["hosts"] = d.Targets, hosts
	}
	out := map[string]any{"tillwatch": map[string]any{"killswitch": ks}, "user": map[string]any{"name": d.Issuer}}
	if d.Reason != "" {
		out["event"] = map[string]any{"reason": d.Reason}
	}
	return out
}
