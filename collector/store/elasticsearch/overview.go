package elasticsearch

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

var _ store.Overview = (*Store)(nil)

// AlertTally implements store.Overview with a paged composite aggregation
// per host and, inside it, a filter counting the stopped alerts: the
// cluster counts, nothing but the counts comes back.
func (s *Store) AlertTally(ctx context.Context, since time.Time) (map[string]store.AlertTally, error) {
	index := s.Stream(StreamAlerts)
	if err := s.refresh(ctx, index); err != nil {
		return nil, fmt.Errorf("elasticsearch: alert tally: %w", err)
	}
	query := map[string]any{"bool": map[string]any{
		"filter": []any{
			map[string]any{"term": map[string]any{"event.kind": event.KindAlert}},
			map[string]any{"range": map[string]any{"@timestamp": map[string]any{
				"gte": since.UTC().Format(time.RFC3339Nano), "format": "strict_date_optional_time_nanos"}}},
		},
		"must_not": []any{map[string]any{"term": map[string]any{"rule.ruleset": event.RulesetIntegrity}}},
	}}
	stopped := map[string]any{"bool": map[string]any{"minimum_should_match": 1, "should": []any{
		map[string]any{"bool": map[string]any{"filter": []any{
			map[string]any{"terms": map[string]any{"tillwatch.response.action": store.StoppingActions}},
			map[string]any{"term": map[string]any{"tillwatch.response.result": event.ResultOK}},
		}}},
		map[string]any{"exists": map[string]any{"field": "tillwatch.ransomware.stopped"}},
	}}}
	out := map[string]store.AlertTally{}
	var after map[string]any
	for {
		comp := map[string]any{"size": hostPage, "sources": []any{map[string]any{"host": map[string]any{"terms": map[string]any{"field": "host.id"}}}}}
		if after != nil {
			comp["after"] = after
		}
		r, err := s.search(ctx, index, map[string]any{"size": 0, "query": query, "track_total_hits": false,
			"aggs": map[string]any{"hosts": map[string]any{"composite": comp,
				"aggs": map[string]any{"stopped": map[string]any{"filter": stopped}}}}})
		if err != nil {
			return nil, fmt.Errorf("elasticsearch: alert tally: %w", err)
		}
		if len(r.Aggregations) == 0 {
			return out, nil // no alerts stream yet
		}
		var aggs struct {
			Hosts struct {
				AfterKey map[string]any `json:"after_key"`
				Buckets  []struct {
					Key      struct{ Host string } `json:"key"`
					DocCount int                   `json:"doc_count"`
					Stopped  struct {
						DocCount int `json:"doc_count"`
					} `json:"stopped"`
				} `json:"buckets"`
			} `json:"hosts"`
		}
		if err := json.Unmarshal(r.Aggregations, &aggs); err != nil {
			return nil, fmt.Errorf("elasticsearch: alert tally: %w", err)
		}
		for _, b := range aggs.Hosts.Buckets {
			out[b.Key.Host] = store.AlertTally{Alerts: b.DocCount, Unstopped: b.DocCount - b.Stopped.DocCount}
		}
		if len(aggs.Hosts.Buckets) < hostPage || aggs.Hosts.AfterKey == nil {
			return out, nil
		}
		after = aggs.Hosts.AfterKey
	}
}

// HealthEvents implements store.Overview from the health data stream.
func (s *Store) HealthEvents(ctx context.Context, hostID string, limit int) ([]json.RawMessage, error) {
	index := s.Stream(StreamHealth)
	if err := s.refresh(ctx, index); err != nil {
		return nil, fmt.Errorf("elasticsearch: health events: %w", err)
	}
	r, err := s.search(ctx, index, map[string]any{
		"size":             max(limit, 0),
		"query":            map[string]any{"bool": map[string]any{"filter": []any{map[string]any{"term": map[string]any{"host.id": hostID}}}}},
		"sort":             []any{map[string]any{"@timestamp": "desc"}, map[string]any{"event.id": "desc"}},
		"track_total_hits": false,
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: health events: %w", err)
	}
	out := make([]json.RawMessage, 0, len(r.Hits.Hits))
	for _, h := range r.Hits.Hits {
		out = append(out, h.Source)
	}
	return out, nil
}

// CommandHosts implements store.Overview: one paged search of the
// command-hosts index for every command at once.
func (s *Store) CommandHosts(ctx context.Context, ids []string, hostID string) (map[string][]store.CommandHost, error) {
	out := map[string][]store.CommandHost{}
	if len(ids) == 0 {
		return out, nil
	}
	index := s.stateIndex(kindCommandHosts)
	if err := s.refresh(ctx, index); err != nil {
		return nil, fmt.Errorf("elasticsearch: command hosts: %w", err)
	}
	filter := []any{map[string]any{"terms": map[string]any{"command_id": ids}}}
	if hostID != "" {
		filter = append(filter, map[string]any{"term": map[string]any{"host_id": hostID}})
	}
	err := s.searchPages(ctx, index, map[string]any{
		"query": map[string]any{"bool": map[string]any{"filter": filter}},
		"sort":  []any{map[string]any{"command_id": "asc"}, map[string]any{"host_id": "asc"}},
	}, 0, func(h rawHit) error {
		var d commandHostDoc
		if err := json.Unmarshal(h.Source, &d); err != nil {
			return fmt.Errorf("host document %s: %w", h.ID, err)
		}
		out[d.CommandID] = append(out[d.CommandID], d.host())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: command hosts: %w", err)
	}
	return out, nil
}
