package elasticsearch

// Deliveries of kill-switch commands to sensors: what a host has pending
// (one host, or every long-polling host at once), and its acknowledgements.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// PendingCommands implements store.CommandStore. An idle host costs one
// search (its unacknowledged, unexpired deliveries: usually none); see
// PendingCommandsFor.
func (s *Store) PendingCommands(ctx context.Context, hostID string, now time.Time) ([]killswitch.Signed, error) {
	m, err := s.PendingCommandsFor(ctx, []string{hostID}, now, nil)
	if err != nil {
		return nil, err
	}
	return m[hostID], nil
}

// PendingCommandsFor implements store.CommandStore: the hosts'
// unacknowledged, unexpired deliveries are searched (terms, a page of hosts
// at a time); the commands found are read in real time and kept when
// active and unexpired, oldest first; answer is called; the deliveries
// still pending are marked delivered under optimistic concurrency, so a mark never
// overwrites an acknowledgement that came in meanwhile (that item
// conflicts and is skipped).
func (s *Store) PendingCommandsFor(ctx context.Context, hostIDs []string, now time.Time, answer func(map[string][]killswitch.Signed)) (map[string][]killswitch.Signed, error) {
	hostIndex := s.stateIndex(kindCommandHosts)
	type open struct {
		host, command, id string
		version           docVersion
		state             string
	}
	var opens []open
	seen := map[string]bool{} // command ids
	var ids []string
	for start := 0; start < len(hostIDs); start += s.page() {
		chunk := hostIDs[start:min(start+s.page(), len(hostIDs))]
		err := s.searchPages(ctx, hostIndex, map[string]any{
			"query": map[string]any{"bool": map[string]any{
				"filter": []any{
					map[string]any{"terms": map[string]any{"host_id": chunk}},
					map[string]any{"range": map[string]any{"not_after": map[string]any{
						"gt": now.UTC().Format(time.RFC3339Nano), "format": "strict_date_optional_time_nanos"}}},
				},
				"must_not": []any{map[string]any{"term": map[string]any{"state": store.HostAcked}}},
			}},
			"sort":                []any{map[string]any{"host_id": "asc"}, map[string]any{"command_id": "asc"}},
			"seq_no_primary_term": true,
			"_source":             []string{"command_id", "host_id", "state"},
		}, 0, func(h rawHit) error {
			var d commandHostDoc
			if err := json.Unmarshal(h.Source, &d); err != nil {
				return fmt.Errorf("host document %s: %w", h.ID, err)
			}
			if !seen[d.CommandID] {
				seen[d.CommandID] = true
				ids = append(ids, d.CommandID)
			}
			opens = append(opens, open{host: d.HostID, command: d.CommandID, id: h.ID,
				version: docVersion{h.SeqNo, h.PrimaryTerm}, state: d.State})
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("elasticsearch: pending commands: %w", err)
		}
	}
	if len(ids) == 0 {
		if answer != nil {
			answer(nil)
		}
		return nil, nil
	}
	docs, err := mget[commandDoc](ctx, s, s.stateIndex(kindCommands), ids)
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: pending commands: %w", err)
	}
	live := map[string]commandDoc{}
	for _, d := range docs {
		// Not found: a create that failed half-way left inert host documents.
		if d.Found && d.Source.State == store.CommandActive && d.Source.NotAfter.After(now) {
			live[d.Source.ID] = d.Source
		}
	}
	// Oldest first per host: by creation order, then id.
	sort.SliceStable(opens, func(i, j int) bool {
		ci, cj := live[opens[i].command], live[opens[j].command]
		if ci.Seq != cj.Seq {
			return ci.Seq < cj.Seq
		}
		return ci.ID < cj.ID
	})
	out := map[string][]killswitch.Signed{}
	var marks []bulkOp
	for _, o := range opens {
		c, ok := live[o.command]
		if !ok {
			continue
		}
		out[o.host] = append(out[o.host], c.Signed)
		if o.state == store.HostPending {
			v := o.version
			marks = append(marks, bulkOp{action: "update", id: o.id, version: &v,
				doc: map[string]any{"state": store.HostDelivered, "delivered_at": now.UTC()}})
		}
	}
	if len(out) == 0 {
		out = nil
	}
	if answer != nil {
		answer(out)
	}
	if len(marks) > 0 {
		items, err := s.bulkWrite(ctx, hostIndex, marks, "")
		if err != nil {
			return nil, fmt.Errorf("elasticsearch: mark delivered: %w", err)
		}
		// 409: acknowledged or marked by another request since the search;
		// 404: removed. Neither needs the mark.
		if err := bulkFailures(items, marks, []int{http.StatusConflict, http.StatusNotFound}); err != nil {
			return nil, fmt.Errorf("elasticsearch: mark delivered: %w", err)
		}
	}
	return out, nil
}

// AckCommand implements store.CommandStore. The write waits for a refresh,
// so the host's next poll (on any collector) no longer sees the command.
func (s *Store) AckCommand(ctx context.Context, id, hostID string, r killswitch.Result, at time.Time) error {
	index := s.stateIndex(kindCommandHosts)
	docID := commandHostID(id, hostID)
	err := func() error {
		for range casRetries {
			g, err := getDoc[commandHostDoc](ctx, s, index, docID)
			if err != nil {
				return err
			}
			if !g.Found {
				return store.ErrUnknownCommand
			}
			d := g.Source
			d.State, d.AckedAt = store.HostAcked, timePtr(at)
			res := r
			d.Result = &res
			if d.DeliveredAt == nil {
				d.DeliveredAt = timePtr(at)
			}
			conflict, err := s.writeDoc(ctx, index, docID, &g.docVersion, d, "wait_for")
			if err != nil || !conflict {
				return err
			}
		}
		return fmt.Errorf("still conflicting after %d attempts", casRetries)
	}()
	if errors.Is(err, store.ErrUnknownCommand) {
		return err
	}
	if err != nil {
		return fmt.Errorf("elasticsearch: ack command %s from %s: %w", id, hostID, err)
	}
	ks := map[string]any{"command_id": id, "status": r.Status}
	if r.Detail != "" {
		ks["detail"] = r.Detail
	}
	if r.Refusal != "" {
		ks["refusal"] = r.Refusal
	}
	if len(r.Affected) > 0 {
		ks["affected"] = r.Affected
	}
	err = s.auditEvent(ctx, "configuration", "killswitch-ack", "change", ackOutcome(r.Status), hostID, map[string]any{
		"tillwatch": map[string]any{"killswitch": ks},
	})
	if err != nil {
		return fmt.Errorf("elasticsearch: ack of command %s from %s is stored, but its audit record is not: %w", id, hostID, err)
	}
	return nil
}

// ackOutcome is event.outcome for a result status.
func ackOutcome(status string) string {
	switch status {
	case killswitch.StatusOK, killswitch.StatusNoop:
		return "success"
	case killswitch.StatusFailed, killswitch.StatusRefused:
		return "failure"
	}
	return "unknown"
}
