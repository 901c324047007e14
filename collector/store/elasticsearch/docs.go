package elasticsearch

// Generic document helpers shared by every concern of the store: the one way
// to read documents (mget, real time: getDoc for one), conditional writes
// through _bulk, and paged searches.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// refresh makes everything written so far searchable in indices (missing
// ones are fine: no alert stored yet).
func (s *Store) refresh(ctx context.Context, indices ...string) error {
	return s.do(ctx, esapi.IndicesRefreshRequest{Index: indices, IgnoreUnavailable: esapi.BoolPtr(true),
		AllowNoIndices: esapi.BoolPtr(true)}, nil)
}

type searchResult struct {
	Hits struct {
		Hits []struct {
			Source json.RawMessage `json:"_source"`
			Sort   []any           `json:"sort"`
		} `json:"hits"`
	} `json:"hits"`
	Aggregations json.RawMessage `json:"aggregations"`
}

func (s *Store) search(ctx context.Context, index string, body map[string]any) (searchResult, error) {
	var r searchResult
	err := s.do(ctx, esapi.SearchRequest{Index: []string{index}, Body: jsonBody(body),
		IgnoreUnavailable: esapi.BoolPtr(true), AllowNoIndices: esapi.BoolPtr(true)}, &r)
	return r, err
}

// defaultPage is the search_after page and the mget chunk, defaultBulk the
// bulk chunk: a command addresses up to killswitch.MaxTargets hosts, read
// and written in a few requests, each well below index.max_result_window
// and http.max_content_length.
const (
	defaultPage = 5000
	defaultBulk = 5000
)

func (s *Store) page() int {
	if n := s.pageSize.Load(); n > 0 {
		return int(n)
	}
	return defaultPage
}

func (s *Store) bulkChunk() int {
	if n := s.bulkSize.Load(); n > 0 {
		return int(n)
	}
	return defaultBulk
}

// docVersion is what optimistic concurrency compares (_seq_no and
// _primary_term of the version read).
type docVersion struct {
	SeqNo       int64 `json:"_seq_no"`
	PrimaryTerm int64 `json:"_primary_term"`
}

// docResult is one document as mget answers it (real time: a write is
// visible to the next read without a refresh).
type docResult[T any] struct {
	ID    string `json:"_id"`
	Found bool   `json:"found"`
	// Version counts the writes of the document (credentials.go reads it).
	Version int64 `json:"_version"`
	docVersion
	Source T `json:"_source"`
	Error  *struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	} `json:"error"`
}

// mget reads documents by id, in chunks, in the order asked.
func mget[T any](ctx context.Context, s *Store, index string, ids []string) ([]docResult[T], error) {
	out := make([]docResult[T], 0, len(ids))
	for start := 0; start < len(ids); start += s.page() {
		chunk := ids[start:min(start+s.page(), len(ids))]
		var r struct {
			Docs []docResult[T] `json:"docs"`
		}
		if err := s.do(ctx, esapi.MgetRequest{Index: index, Body: jsonBody(map[string]any{"ids": chunk})}, &r); err != nil {
			return nil, err
		}
		if len(r.Docs) != len(chunk) {
			return nil, fmt.Errorf("mget %s: %d documents answered for %d asked", index, len(r.Docs), len(chunk))
		}
		for _, d := range r.Docs {
			if d.Error != nil {
				if d.Error.Type == "index_not_found_exception" {
					continue // as not found
				}
				return nil, fmt.Errorf("get %s/%s: %s: %s", index, d.ID, d.Error.Type, d.Error.Reason)
			}
		}
		out = append(out, r.Docs...)
	}
	return out, nil
}

// getDoc reads one document in real time.
func getDoc[T any](ctx context.Context, s *Store, index, id string) (docResult[T], error) {
	r, err := mget[T](ctx, s, index, []string{id})
	if err != nil {
		return docResult[T]{}, err
	}
	return r[0], nil
}

// writeDoc writes one whole document: with version, only over that version
// (conflict reports that another write came first); without, only if no
// document has the id (op_type create; conflict: it exists).
func (s *Store) writeDoc(ctx context.Context, index, id string, version *docVersion, doc any, refresh string) (conflict bool, err error) {
	op := bulkOp{action: "create", id: id, doc: doc}
	if version != nil {
		op.action, op.version = "index", version
	}
	items, err := s.bulkWrite(ctx, index, []bulkOp{op}, refresh)
	if err != nil {
		return false, err
	}
	if items[0].status == http.StatusConflict {
		return true, nil
	}
	return false, bulkFailures(items, []bulkOp{op}, nil)
}

// bulkOp is one item of a _bulk request.
type bulkOp struct {
	action  string      // create, index or update
	id      string      // _id
	version *docVersion // if_seq_no/if_primary_term when set
	doc     any         // the document; for update the partial document
}

// bulkItem is Elasticsearch's answer for one item.
type bulkItem struct {
	status int
	reason string
}

func (b bulkItem) ok() bool { return b.status >= 200 && b.status < 300 }

// bulkWrite sends ops to index in chunks and returns every item's answer.
// Items refused as overloaded (429) or failed on the server (5xx) are
// retried with backoff, up to the store's retries, like ingest; what still
// fails is in the answer, for bulkFailures to report.
func (s *Store) bulkWrite(ctx context.Context, index string, ops []bulkOp, refresh string) ([]bulkItem, error) {
	items := make([]bulkItem, len(ops))
	todo := make([]int, len(ops))
	for i := range ops {
		todo[i] = i
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(backoff(attempt)):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		for start := 0; start < len(todo); start += s.bulkChunk() {
			chunk := todo[start:min(start+s.bulkChunk(), len(todo))]
			if err := s.bulkOnce(ctx, index, ops, chunk, items, refresh); err != nil {
				return nil, err
			}
		}
		if attempt >= s.retry {
			break
		}
		var again []int
		for _, i := range todo {
			if st := items[i].status; st == http.StatusTooManyRequests || st >= 500 {
				again = append(again, i)
			}
		}
		todo = again
	}
	return items, nil
}

// bulkOnce sends ops[chunk] as one _bulk request and records the answers.
func (s *Store) bulkOnce(ctx context.Context, index string, ops []bulkOp, chunk []int, items []bulkItem, refresh string) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf) // one line per value
	for _, i := range chunk {
		op := ops[i]
		meta := map[string]any{"_id": op.id}
		if op.version != nil {
			meta["if_seq_no"], meta["if_primary_term"] = op.version.SeqNo, op.version.PrimaryTerm
		}
		body := op.doc
		if op.action == "update" {
			body = map[string]any{"doc": op.doc}
		}
		if err := enc.Encode(map[string]any{op.action: meta}); err != nil {
			return err
		}
		if err := enc.Encode(body); err != nil {
			return fmt.Errorf("document %s: %w", op.id, err)
		}
	}
	var r struct {
		Items []map[string]struct {
			Status int `json:"status"`
			Error  *struct {
				Type   string `json:"type"`
				Reason string `json:"reason"`
			} `json:"error"`
		} `json:"items"`
	}
	if err := s.do(ctx, esapi.BulkRequest{Index: index, Body: &buf, Refresh: refresh}, &r); err != nil {
		return err
	}
	if len(r.Items) != len(chunk) {
		return fmt.Errorf("bulk %s: %d items answered for %d sent", index, len(r.Items), len(chunk))
	}
	for n, i := range chunk {
		for _, res := range r.Items[n] { // one key: the action
			items[i] = bulkItem{status: res.Status}
			if res.Error != nil {
				items[i].reason = fmt.Sprintf("%s (%d): %s", res.Error.Type, res.Status, res.Error.Reason)
			}
		}
	}
	return nil
}

// bulkFailures is nil when every item succeeded or answered a status in
// accept; otherwise one line counting the failures and naming the first.
func bulkFailures(items []bulkItem, ops []bulkOp, accept []int) error {
	var n int
	var first string
outer:
	for i, it := range items {
		if it.ok() {
			continue
		}
		for _, st := range accept {
			if it.status == st {
				continue outer
			}
		}
		if n == 0 {
			first = ops[i].id + ": " + it.reason
			if it.reason == "" {
				first = fmt.Sprintf("%s: status %d", ops[i].id, it.status)
			}
		}
		n++
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d documents not written (first: %s)", n, len(items), first)
}

// rawHit is one search hit as stored, with what paging and optimistic
// concurrency need; sort values stay raw so a long is passed back exactly.
type rawHit struct {
	ID          string            `json:"_id"`
	SeqNo       int64             `json:"_seq_no"`
	PrimaryTerm int64             `json:"_primary_term"`
	Source      json.RawMessage   `json:"_source"`
	Sort        []json.RawMessage `json:"sort"`
}

// searchPages runs body (query, sort: unique per hit) over index and calls
// fn for every hit in sort order, at most limit (0: all), paging with
// search_after so no result window caps it. The sort keys it pages on are
// never updated, so writes between pages neither skip nor repeat a hit.
func (s *Store) searchPages(ctx context.Context, index string, body map[string]any, limit int, fn func(rawHit) error) error {
	var after []json.RawMessage
	seen := 0
	for {
		size := s.page()
		if limit > 0 {
			size = min(size, limit-seen)
		}
		b := maps.Clone(body)
		b["size"], b["track_total_hits"] = size, false
		if after != nil {
			b["search_after"] = after
		}
		var r struct {
			Hits struct {
				Hits []rawHit `json:"hits"`
			} `json:"hits"`
		}
		err := s.do(ctx, esapi.SearchRequest{Index: []string{index}, Body: jsonBody(b),
			IgnoreUnavailable: esapi.BoolPtr(true), AllowNoIndices: esapi.BoolPtr(true)}, &r)
		if err != nil {
			return err
		}
		for _, h := range r.Hits.Hits {
			if err := fn(h); err != nil {
				return err
			}
			after = h.Sort
		}
		seen += len(r.Hits.Hits)
		if len(r.Hits.Hits) < size || (limit > 0 && seen >= limit) {
			return nil
		}
	}
}
