package elasticsearch

// Queries for analysts: alerts and the host listing with alert counts.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

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
	out, err := s.newestAlerts(ctx, index, filter, f.EffectiveLimit())
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: query alerts: %w", err)
	}
	return out, nil
}

// maxResultWindow is index.max_result_window's default: the most hits one
// search returns.
const maxResultWindow = 10000

// tsFormat is how the alert searches write @timestamp: to the nanosecond.
const tsFormat = "strict_date_optional_time_nanos"

// newestAlerts returns the limit newest alerts matching filter, by
// @timestamp and then event.id, both descending.
//
// Asking Elasticsearch for that order directly makes it score every match:
// a second sort key turns off the optimisation that skips the documents
// a date sort cannot reach (the newest 50 of 100,000 alerts took 300 ms
// instead of 20 on the test node). So the first search sorts on @timestamp
// alone and asks for one alert more than wanted; unless the last alert
// wanted and that one more share a timestamp, those are the newest, and
// Go orders ties by event.id. On such a tie a second search takes every
// alert from that timestamp on, in the full order.
func (s *Store) newestAlerts(ctx context.Context, index string, filter []any, limit int) ([]json.RawMessage, error) {
	type hit struct {
		Source json.RawMessage   `json:"_source"`
		Sort   []json.RawMessage `json:"sort"`
		Fields struct {
			ID []string `json:"event.id"`
		} `json:"fields"`
	}
	var r struct {
		Hits struct {
			Hits []hit `json:"hits"`
		} `json:"hits"`
	}
	body := map[string]any{
		"size":  limit + 1,
		"query": map[string]any{"bool": map[string]any{"filter": filter}},
		// The timestamp as text in the sort values: the same on a date and
		// a date_nanos mapping, and what the range below reads.
		"sort":             []any{map[string]any{"@timestamp": map[string]any{"order": "desc", "format": tsFormat}}},
		"fields":           []string{"event.id"},
		"track_total_hits": false,
	}
	search := func() error {
		r.Hits.Hits = nil
		return s.do(ctx, esapi.SearchRequest{Index: []string{index}, Body: jsonBody(body),
			IgnoreUnavailable: esapi.BoolPtr(true), AllowNoIndices: esapi.BoolPtr(true)}, &r)
	}
	fullSort := []any{map[string]any{"@timestamp": map[string]any{"order": "desc", "format": tsFormat}}, map[string]any{"event.id": "desc"}}
	if limit+1 > maxResultWindow {
		// No room for the one more: the full order in one search.
		body["size"], body["sort"] = limit, fullSort
	}
	if err := search(); err != nil {
		return nil, err
	}
	hits := r.Hits.Hits
	if len(hits) > limit {
		last, more := hits[limit-1].Sort, hits[limit].Sort
		if len(last) == 0 || len(more) == 0 || string(last[0]) == string(more[0]) {
			// A tie across the cut: everything from that timestamp on,
			// in the full order (a bounded range keeps the search cheap).
			body["size"] = limit
			body["sort"] = fullSort
			body["query"] = map[string]any{"bool": map[string]any{"filter": append(slices.Clip(filter),
				map[string]any{"range": map[string]any{"@timestamp": map[string]any{"gte": json.RawMessage(last[0]), "format": tsFormat}}})}}
			if err := search(); err != nil {
				return nil, err
			}
			hits = r.Hits.Hits
		} else {
			hits = hits[:limit]
		}
	}
	id := func(h hit) string {
		if len(h.Fields.ID) == 0 {
			return ""
		}
		return h.Fields.ID[0]
	}
	// Within one timestamp, event.id descending (byte order, as the
	// keyword sort has it); the timestamps are in order already.
	sameTime := func(a, b hit) bool {
		return len(a.Sort) > 0 && len(b.Sort) > 0 && string(a.Sort[0]) == string(b.Sort[0])
	}
	for i := 0; i < len(hits); {
		j := i + 1
		for j < len(hits) && sameTime(hits[i], hits[j]) {
			j++
		}
		slices.SortStableFunc(hits[i:j], func(a, b hit) int { return strings.Compare(id(b), id(a)) })
		i = j
	}
	out := make([]json.RawMessage, 0, len(hits))
	for _, h := range hits {
		out = append(out, h.Source)
	}
	return out, nil
}

// hostPage is how many hosts one search returns while listing, and how
// many hosts one page of a per-host aggregation holds: a fleet of up to
// that many is one request (a page one short of it cost a second search,
// as slow as the first, on every console load of a 1,000-till fleet).
// index.max_result_window (10,000) bounds it.
const hostPage = 5000

// Hosts implements store.Store.
func (s *Store) Hosts(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, true)
}

// HostList implements store.Overview: Hosts without the aggregation that
// counts every stored alert per host.
func (s *Store) HostList(ctx context.Context) ([]api.Host, error) {
	return s.hosts(ctx, false)
}

// Host implements store.Overview: the host document by its id (a real-time
// read, no refresh) and one count of its alerts.
func (s *Store) Host(ctx context.Context, hostID string) (api.Host, error) {
	r, err := getDoc[hostDoc](ctx, s, s.stateIndex("hosts"), hostID)
	if err != nil {
		return api.Host{}, fmt.Errorf("elasticsearch: host %s: %w", hostID, err)
	}
	if !r.Found {
		return api.Host{}, store.ErrUnknownHost
	}
	alerts := s.Stream(StreamAlerts)
	if err := s.refresh(ctx, alerts); err != nil {
		return api.Host{}, fmt.Errorf("elasticsearch: host %s: %w", hostID, err)
	}
	var c struct {
		Count int64 `json:"count"`
	}
	err = s.do(ctx, esapi.CountRequest{Index: []string{alerts}, IgnoreUnavailable: esapi.BoolPtr(true), AllowNoIndices: esapi.BoolPtr(true),
		Body: jsonBody(map[string]any{"query": map[string]any{"bool": map[string]any{"filter": []any{
			map[string]any{"term": map[string]any{"event.kind": event.KindAlert}},
			map[string]any{"term": map[string]any{"host.id": hostID}},
		}}}})}, &c)
	if err != nil {
		return api.Host{}, fmt.Errorf("elasticsearch: host %s: alert count: %w", hostID, err)
	}
	return r.Source.host(c.Count), nil
}

// host is the listing's view of the document.
func (d hostDoc) host(alerts int64) api.Host {
	return api.Host{HostID: d.HostID, HostName: d.HostName, AgentID: d.AgentID,
		AgentVersion: d.AgentVersion, OS: d.OS, Labels: nilIfEmpty(d.Labels), Mode: d.Mode,
		Health: nilIfEmpty(d.Health), EnrolledAt: d.EnrolledAt.UTC(), LastSeen: d.LastSeen.UTC(),
		AlertCount: alerts, LastSequence: d.SeqMax, EventsLost: d.EventsLost,
		ConfigVersion: d.ConfigVersion, RulesVersion: d.RulesVersion}
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
			out = append(out, d.host(counts[d.HostID]))
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
