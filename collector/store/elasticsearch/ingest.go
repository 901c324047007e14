package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/elastic/go-elasticsearch/v8/esutil"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

// StreamFor picks the dataset (and so the data stream) of a document:
// alerts by kind, health by kind or dataset, then file and audit by
// dataset; all other telemetry is process telemetry.
func StreamFor(d store.Doc) string {
	switch {
	case d.Kind == event.KindAlert:
		return StreamAlerts
	case d.Kind == event.KindState || d.Dataset == event.DatasetHealth:
		return StreamHealth
	case d.Dataset == event.DatasetFile:
		return StreamFile
	case d.Dataset == event.DatasetAudit:
		return StreamAudit
	}
	return StreamProcess
}

// outcome of one bulk item.
type outcome int

const (
	pending   outcome = iota
	created           // stored now
	duplicate         // 409: stored before (a replay)
	retryable         // 429, 5xx, or the whole request failed: try again
	permanent         // refused for this document's content
)

type itemResult struct {
	out    outcome
	reason string
}

func classify(res esutil.BulkIndexerResponseItem, err error) itemResult {
	switch {
	case err != nil:
		return itemResult{retryable, err.Error()}
	case res.Status == http.StatusConflict:
		return itemResult{duplicate, ""}
	case res.Status == http.StatusTooManyRequests || res.Status >= 500 || res.Status == 0:
		return itemResult{retryable, fmt.Sprintf("%s (%d): %s", res.Error.Type, res.Status, res.Error.Reason)}
	}
	return itemResult{permanent, fmt.Sprintf("%s (%d): %s", res.Error.Type, res.Status, res.Error.Reason)}
}

// Ingest implements store.Store. Each document is bulk-created in its data
// stream with event.id as _id; Ingest returns once Elasticsearch has
// answered for every one:
//   - 201 counts as accepted, 409 (already stored: a replay) as duplicate;
//   - 429 and 5xx items, and items of a bulk request that failed as a
//     whole, are retried with backoff up to MaxRetries; then Ingest fails
//     and the sensor, which has kept the batch, sends it again;
//   - a document refused for its content (e.g. a field of an impossible
//     shape) is written whole to tillwatch-deadletter-<ns> with the reason,
//     logged and counted, and counts as accepted: it is stored, just not
//     searchable where it should be.
//
// Nothing is confirmed that Elasticsearch has not confirmed; ctx bounds
// the wait (back-pressure when Elasticsearch is slow).
func (s *Store) Ingest(ctx context.Context, docs []store.Doc) (int, int, error) {
	if len(docs) == 0 {
		return 0, 0, nil
	}
	start := time.Now()
	defer func() { s.m.wait.Observe(time.Since(start).Seconds()) }()

	results := make([]itemResult, len(docs))
	todo := make([]int, len(docs))
	for i := range docs {
		todo[i] = i
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		if attempt > 0 {
			if attempt > s.retry {
				s.m.items.WithLabelValues("failed").Add(float64(len(todo)))
				return 0, 0, fmt.Errorf("elasticsearch: %d of %d events not stored after %d attempts: %s",
					len(todo), len(docs), attempt, results[todo[0]].reason)
			}
			s.m.items.WithLabelValues("retried").Add(float64(len(todo)))
			select {
			case <-time.After(backoff(attempt)):
			case <-ctx.Done():
				return 0, 0, fmt.Errorf("elasticsearch: ingest: %w", ctx.Err())
			}
		}
		if err := s.bulk(ctx, docs, todo, results); err != nil {
			return 0, 0, err
		}
		var again []int
		for _, i := range todo {
			if results[i].out == retryable {
				again = append(again, i)
			}
		}
		todo = again
	}

	var accepted, dups int
	var dead []int
	hosts := map[string]bool{}
	for i, r := range results {
		switch r.out {
		case created:
			accepted++
		case duplicate:
			dups++
		case permanent:
			dead = append(dead, i)
		}
		if d := docs[i]; d.Origin == store.OriginSensor {
			// A batch with sequence numbers is tracked next (TrackSequences),
			// which writes last_seen in its write of the host: a separate
			// partial update here would cost a write, and make the
			// tracker's next write conflict and read the host again.
			touch, seen := hosts[d.HostID]
			hosts[d.HostID] = (touch || !seen) && d.Sequence <= 0
		}
	}
	s.m.items.WithLabelValues("created").Add(float64(accepted))
	s.m.items.WithLabelValues("duplicate").Add(float64(dups))
	for _, i := range dead {
		if err := s.deadLetter(ctx, docs[i], results[i].reason); err != nil {
			return 0, 0, err
		}
		accepted++
	}
	if err := s.touchHosts(ctx, hosts); err != nil {
		return 0, 0, err
	}
	return accepted, dups, nil
}

// bulk hands docs[todo] to the shared bulk indexer and waits for every
// item's answer (or ctx). Sharing one indexer lets concurrent batches share
// bulk requests; its bounded queue makes Add block when Elasticsearch falls
// behind.
//
// A document already in flight is not sent again (flights.go): a batch
// resent because its first attempt outlived its deadline waits for the
// answers to the first attempt's items instead of making Elasticsearch
// write and refuse each of them a second time.
func (s *Store) bulk(ctx context.Context, docs []store.Doc, todo []int, results []itemResult) error {
	fs := make([]*flight, len(todo))
	mine := make(map[*flight]bool, len(todo))
	for k, i := range todo {
		d := docs[i]
		f, joined, owner := s.flights.join(d.EventID, mine)
		fs[k] = f
		if owner {
			mine[f] = true
		}
		if joined {
			s.m.items.WithLabelValues("rejoined").Inc()
			continue
		}
		err := s.bi.Add(ctx, esutil.BulkIndexerItem{
			Index:      s.Stream(StreamFor(d)),
			Action:     "create",
			DocumentID: d.EventID,
			Body:       bytes.NewReader(d.JSON),
			OnSuccess: func(context.Context, esutil.BulkIndexerItem, esutil.BulkIndexerResponseItem) {
				f.finish(itemResult{out: created})
			},
			OnFailure: func(_ context.Context, _ esutil.BulkIndexerItem, res esutil.BulkIndexerResponseItem, err error) {
				f.finish(classify(res, err))
			},
		})
		if err != nil {
			// This item was not handed over and never calls back; the
			// ones before it were and are kept for a resend.
			s.flights.drop(d.EventID, f, err)
			s.flights.abandon(fs[:k], mine)
			return fmt.Errorf("elasticsearch: ingest: %w (Elasticsearch is slow; the sensor will resend)", err)
		}
	}
	for _, f := range fs {
		select {
		case <-f.done:
		case <-ctx.Done():
			// The items still in flight may be stored; they stay known, so
			// the sensor's resend waits for them rather than sending them
			// again (and a replay elsewhere is answered 409: nothing is
			// stored twice).
			s.flights.abandon(fs, mine)
			return fmt.Errorf("elasticsearch: ingest: %w (Elasticsearch is slow; the sensor will resend)", ctx.Err())
		}
	}
	for k, i := range todo {
		results[i] = fs[k].resultFor(mine[fs[k]])
	}
	s.flights.release(docs, todo, fs)
	return nil
}

// deadLetter keeps a document Elasticsearch refused for good, whole.
func (s *Store) deadLetter(ctx context.Context, d store.Doc, reason string) error {
	s.log.Error("elasticsearch refused an event for its content; kept in the dead-letter index",
		"event_id", d.EventID, "host_id", d.HostID, "kind", d.Kind, "index", s.stateIndex("deadletter"), "reason", reason)
	err := s.do(ctx, esapi.CreateRequest{Index: s.stateIndex("deadletter"), DocumentID: d.EventID, Body: jsonBody(map[string]any{
		"@timestamp": s.now().UTC().Format(time.RFC3339Nano),
		"event_id":   d.EventID, "kind": d.Kind, "host_id": d.HostID, "stream": s.Stream(StreamFor(d)),
		"error": truncate(reason, 8000), "original": string(d.JSON),
	})}, nil)
	if err != nil && statusOf(err) != http.StatusConflict {
		s.m.items.WithLabelValues("failed").Inc()
		return fmt.Errorf("elasticsearch: event %s refused (%s) and the dead-letter write failed: %w", d.EventID, reason, err)
	}
	s.m.items.WithLabelValues("deadletter").Inc()
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// DeadLetters returns the documents kept in the dead-letter index, as
// stored (tests and operators use it).
func (s *Store) DeadLetters(ctx context.Context) ([]json.RawMessage, error) {
	index := s.stateIndex("deadletter")
	if err := s.refresh(ctx, index); err != nil {
		return nil, err
	}
	r, err := s.search(ctx, index, map[string]any{"size": 1000, "sort": []any{map[string]any{"event_id": "asc"}}})
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	for _, h := range r.Hits.Hits {
		out = append(out, h.Source)
	}
	return out, nil
}
