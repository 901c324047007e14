package elasticsearch

// Queries for analysts: alerts and the host listing with alert counts.

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

// QueryAlerts implements store.Store.
func (s *Store) QueryAlerts(ctx context.Context, f store.AlertFilter) ([]json.RawMessage, error) {
	index := s.Stream(StreamAlerts)
	if err := s.refresh(ctx, index); err != nil {
		return nil, fmt.Errorf("elasticsearch: query alerts: %w", err)
	}
	filter := []any{map[string]any{"term": map[string]any{"event.kind": event.KindAlert}}}
	if !f.Since.IsZero() {
		filter = append(filter, map[string]any{"range": map[string]any{"@timestamp": map[string]any{
			"gte": f.Since.UTC().Format(time.RFC3339Nano), "format": "strict_date_optional_time_nanos"}}})
	}
	if f.HostID != "" {
		filter = append(filter, map[string]any{"term": map[string]any{"host.id": f.HostID}})
	}
	if f.RuleID != "" {
		filter = append(filter, map[string]any{"term": map[string]any{"rule.id": f.RuleID}})
	}
	if !f.Until.IsZero() {
		filter = append(filter, map[string]any{"range": map[string]any{"@timestamp": map[string]any{
			"lt": f.Until.UTC().Format(time.RFC3339Nano), "format": "strict_date_optional_time_nanos"}}})
	}
	if len(f.HostIDs) > 0 {
		filter = append(filter, map[string]any{"terms": map[string]any{"host.id": f.HostIDs}})
	}
	if f.MinSeverity > 0 {
		filter = append(filter, map[string]any{"range": map[string]any{"event.severity": map[string]any{"gte": f.MinSeverity}}})
	}
	if f.EventID != "" {
		filter = append(filter, map[string]any{"term": map[string]any{"event.id": f.EventID}})
	}
	r, err := s.search(ctx, index, map[string]any{
		"size":             f.EffectiveLimit(),
		"query":            map[string]any{"bool": map[string]any{"filter": filter}},
		"sort":             []any{map[string]any{"@timestamp": "desc"}, map[string]any{"event.id": "desc"}},
		"track_total_hits": false,
	})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: query alerts: %w", err)
	}
	out := make([]json.RawMessage, 0, len(r.Hits.Hits))
	for _, h := range r.Hits.Hits {
		out = append(out, h.Source)
	}
	return out, nil
}

// hostPage is how many hosts one search returns while listing.
const hostPage = 1000

// Hosts implements store.Store.
func (s *Store) Hosts(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, true)
}

// HostList implements store.Overview: Hosts without the aggregation that
// counts every stored alert per host.
func (s *Store) HostList(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, false)
}

func (s *Store) hosts(ctx context.Context, withCounts bool) ([]api.Host, error) {
	index := s.stateIndex("hosts")
	alerts := s.Stream(StreamAlerts)
	indices := []string{index}
	if withCounts {
		indices = append(indices, alerts)
	}
	if err := s.refresh(ctx, indices...); err != nil {
		return nil, fmt.Errorf("elasticsearch: hosts: %w", err)
	}
	counts := map[string]int64{}
	if withCounts {
		var err error
		if counts, err = s.alertCounts(ctx, alerts); err != nil {
			return nil, err
		}
	}
	out := []api.Host{}
	var after []any
	for {
		body := map[string]any{"size": hostPage, "sort": []any{map[string]any{"host_id": "asc"}}, "query": map[string]any{"match_all": map[string]any{}}}
		if after != nil {
			body["search_after"] = after
		}
		r, err := s.search(ctx, index, body)
		if err != nil {
			return nil, fmt.Errorf("elasticsearch: hosts: %w", err)
		}
		for _, hit := range r.Hits.Hits {
			var d hostDoc
			if err := json.Unmarshal(hit.Source, &d); err != nil {
				return nil, fmt.Errorf("elasticsearch: hosts: %w", err)
			}
			out = append(out, api.Host{HostID: d.HostID, HostName: d.HostName, AgentID: d.AgentID,
				AgentVersion: d.AgentVersion, OS: d.OS, Labels: nilIfEmpty(d.Labels), Mode: d.Mode,
				Health: nilIfEmpty(d.Health), EnrolledAt: d.EnrolledAt.UTC(), LastSeen: d.LastSeen.UTC(),
				AlertCount: counts[d.HostID], LastSequence: d.SeqMax, EventsLost: d.EventsLost,
				ConfigVersion: d.ConfigVersion, RulesVersion: d.RulesVersion})
			after = hit.Sort
		}
		if len(r.Hits.Hits) < hostPage {
			break
		}
	}
	// Sort in Go too: keyword order is byte order, like SQLite's; this
	// keeps the contract independent of the cluster's collation.
	sort.Slice(out, func(i, j int) bool { return out[i].HostID < out[j].HostID })
	return out, nil
}

// alertCounts counts alerts per host with a paged composite aggregation, so
// a chain of thousands of tills is counted exactly, not approximately.
func (s *Store) alertCounts(ctx context.Context, index string) (map[string]int64, error) {
	counts := map[string]int64{}
	var after map[string]any
	for {
		comp := map[string]any{"size": hostPage, "sources": []any{map[string]any{"host": map[string]any{"terms": map[string]any{"field": "host.id"}}}}}
		if after != nil {
			comp["after"] = after
		}
		r, err := s.search(ctx, index, map[string]any{"size": 0,
			"query": map[string]any{"term": map[string]any{"event.kind": event.KindAlert}},
			"aggs":  map[string]any{"hosts": map[string]any{"composite": comp}}})
		if err != nil {
			return nil, fmt.Errorf("elasticsearch: alert counts: %w", err)
		}
		if len(r.Aggregations) == 0 {
			return counts, nil // no alerts stream yet
		}
		var aggs struct {
			Hosts struct {
				AfterKey map[string]any `json:"after_key"`
				Buckets  []struct {
					Key      struct{ Host string } `json:"key"`
					DocCount int64                 `json:"doc_count"`
				} `json:"buckets"`
			} `json:"hosts"`
		}
		if err := json.Unmarshal(r.Aggregations, &aggs); err != nil {
			return nil, fmt.Errorf("elasticsearch: alert counts: %w", err)
		}
		for _, b := range aggs.Hosts.Buckets {
			counts[b.Key.Host] = b.DocCount
		}
		if len(aggs.Hosts.Buckets) < hostPage || aggs.Hosts.AfterKey == nil {
			return counts, nil
		}
		after = aggs.Hosts.AfterKey
	}
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}
