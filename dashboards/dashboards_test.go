package dashboards_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
	"github.com/tillwatch/tillwatch/dashboards"
)

type savedObject struct {
	Type       string         `json:"type"`
	ID         string         `json:"id"`
	Attributes map[string]any `json:"attributes"`
	References []struct {
		Name, Type, ID string
	} `json:"references"`
}

func loadObjects(t *testing.T) []savedObject {
	t.Helper()
	files, err := fs.Glob(dashboards.Kibana, "kibana/*.ndjson")
	if err != nil || len(files) == 0 {
		t.Fatalf("no saved objects: %v", err)
	}
	var out []savedObject
	for _, f := range files {
		raw, _ := fs.ReadFile(dashboards.Kibana, f)
		sc := bufio.NewScanner(bytes.NewReader(raw))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			var o savedObject
			if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
				t.Fatalf("%s:%d: %v", f, n, err)
			}
			out = append(out, o)
		}
	}
	return out
}

// embedded returns an attribute holding JSON as a string, parsed.
func embedded(t *testing.T, o savedObject, path ...string) any {
	t.Helper()
	var cur any = o.Attributes
	for _, p := range path {
		m, _ := cur.(map[string]any)
		cur = m[p]
	}
	s, ok := cur.(string)
	if !ok {
		return nil
	}
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Errorf("%s %s: %s is not JSON: %v", o.Type, o.ID, strings.Join(path, "."), err)
	}
	return v
}

type searchSource struct {
	Query struct {
		Query    string `json:"query"`
		Language string `json:"language"`
	} `json:"query"`
	IndexRefName string `json:"indexRefName"`
}

func source(t *testing.T, o savedObject) searchSource {
	var s searchSource
	if v := embedded(t, o, "kibanaSavedObjectMeta", "searchSourceJSON"); v != nil {
		b, _ := json.Marshal(v)
		json.Unmarshal(b, &s)
	}
	return s
}

// luceneField finds field names in a Lucene query ("rule.ruleset:rmm").
var luceneField = regexp.MustCompile(`([A-Za-z_@][A-Za-z0-9_.@]*):`)

// fieldsUsed lists every field a saved object names: query, columns, sort
// and aggregation fields.
func fieldsUsed(t *testing.T, o savedObject) []string {
	var out []string
	for _, m := range luceneField.FindAllStringSubmatch(source(t, o).Query.Query, -1) {
		out = append(out, m[1])
	}
	if cols, ok := o.Attributes["columns"].([]any); ok {
		for _, c := range cols {
			out = append(out, c.(string))
		}
	}
	if vs, ok := embedded(t, o, "visState").(map[string]any); ok {
		for _, a := range vs["aggs"].([]any) {
			if f, ok := a.(map[string]any)["params"].(map[string]any)["field"].(string); ok {
				out = append(out, f)
			}
		}
	}
	return out
}

// TestSavedObjectsAreConsistent: no Kibana runs here, so this stands in for
// an import: unique ids, every reference resolves, every embedded JSON
// string parses, every field named exists in our templates.
func TestSavedObjectsAreConsistent(t *testing.T) {
	t.Parallel()
	objs := loadObjects(t)
	tpls, err := elasticsearch.Templates(elasticsearch.Capabilities{})
	if err != nil {
		t.Fatal(err)
	}
	mapped := elasticsearch.MappedFields(tpls)
	byKey := map[string]savedObject{}
	for _, o := range objs {
		if o.ID == "" || o.Type == "" {
			t.Errorf("object without id or type: %+v", o)
		}
		if _, dup := byKey[o.Type+"/"+o.ID]; dup {
			t.Errorf("duplicate %s %s", o.Type, o.ID)
		}
		byKey[o.Type+"/"+o.ID] = o
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.Type]++
		for _, r := range o.References {
			if _, ok := byKey[r.Type+"/"+r.ID]; !ok {
				t.Errorf("%s %s: reference %s -> %s %s does not resolve", o.Type, o.ID, r.Name, r.Type, r.ID)
			}
		}
		for _, p := range [][]string{{"visState"}, {"uiStateJSON"}, {"panelsJSON"}, {"optionsJSON"}, {"kibanaSavedObjectMeta", "searchSourceJSON"}} {
			embedded(t, o, p...)
		}
		if panels, ok := embedded(t, o, "panelsJSON").([]any); ok {
			refs := map[string]bool{}
			for _, r := range o.References {
				refs[r.Name] = true
			}
			for _, p := range panels {
				if name, _ := p.(map[string]any)["panelRefName"].(string); !refs[name] {
					t.Errorf("dashboard %s: panel ref %q has no reference", o.ID, name)
				}
			}
		}
		if s := source(t, o); s.IndexRefName != "" {
			found := false
			for _, r := range o.References {
				found = found || (r.Name == s.IndexRefName && r.Type == "index-pattern")
			}
			if !found {
				t.Errorf("%s %s: indexRefName %q has no index-pattern reference", o.Type, o.ID, s.IndexRefName)
			}
		}
		for _, f := range fieldsUsed(t, o) {
			// labels.* is ECS's open set of keyword labels (dynamic keyword).
			if _, ok := mapped[f]; !ok && !strings.HasPrefix(f, "labels.") && f != "@timestamp" {
				t.Errorf("%s %s uses %s, which our templates do not map", o.Type, o.ID, f)
			}
		}
	}
	for _, want := range []string{"index-pattern", "search", "visualization", "dashboard"} {
		if kinds[want] == 0 {
			t.Errorf("no %s objects", want)
		}
	}
	for _, rs := range []string{"rmm", "ransomware", "yara", "sigma", "integrity", "killswitch"} {
		if _, ok := byKey["search/tillwatch-search-"+rs]; !ok {
			t.Errorf("no saved search for rule set %s", rs)
		}
	}
}

// TestSavedObjectsReturnHits runs every saved search and visualization
// (query and aggregations) against the real test Elasticsearch on test
// data and requires hits.
func TestSavedObjectsReturnHits(t *testing.T) {
	t.Parallel()
	url := os.Getenv("TILLWATCH_ES_URL")
	if url == "" {
		t.Skip("TILLWATCH_ES_URL not set: run `make es-up` and export TILLWATCH_ES_URL=http://127.0.0.1:9200 (make test does both)")
	}
	b := make([]byte, 6)
	rand.Read(b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := elasticsearch.Open(ctx, elasticsearch.Options{URL: url, Namespace: "d" + hex.EncodeToString(b)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		s.Client().Indices.Delete(s.StateIndices(), s.Client().Indices.Delete.WithIgnoreUnavailable(true))
		s.Client().Indices.DeleteDataStream([]string{"logs-tillwatch.*-" + s.Namespace()})
	})
	raw, err := os.ReadFile("testdata/events.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	var docs []store.Doc
	now := time.Now().UTC()
	for i, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		var e struct {
			Event struct{ ID, Kind, Dataset string } `json:"event"`
			Host  struct{ ID string }                `json:"host"`
			Rule  struct{ ID, Ruleset string }       `json:"rule"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("testdata/events.ndjson:%d: %v", i+1, err)
		}
		// Recent timestamps, so the dashboards' default time range covers them.
		var m map[string]any
		json.Unmarshal(line, &m)
		ts := now.Add(-time.Duration(i) * time.Minute)
		m["@timestamp"] = ts.Format(time.RFC3339Nano)
		doc, _ := json.Marshal(m)
		docs = append(docs, store.Doc{EventID: e.Event.ID, Kind: e.Event.Kind, Dataset: e.Event.Dataset, HostID: e.Host.ID,
			Timestamp: ts, Ingested: now, RuleID: e.Rule.ID, Ruleset: e.Rule.Ruleset, JSON: doc})
	}
	if acc, _, err := s.Ingest(ctx, docs); err != nil || acc != len(docs) {
		t.Fatalf("Ingest = %d, %v; want %d", acc, err, len(docs))
	}
	objs := loadObjects(t)
	views := map[string]string{}
	for _, o := range objs {
		if o.Type == "index-pattern" {
			// The data view's pattern, narrowed to this test's namespace.
			views[o.ID] = strings.ReplaceAll(o.Attributes["title"].(string), "-*", "-"+s.Namespace())
		}
	}
	s.Client().Indices.Refresh(s.Client().Indices.Refresh.WithIndex("logs-tillwatch.*-" + s.Namespace()))
	for _, o := range objs {
		if o.Type != "search" && o.Type != "visualization" {
			continue
		}
		t.Run(o.ID, func(t *testing.T) {
			src := source(t, o)
			if src.Query.Language != "lucene" {
				t.Fatalf("query language %q: saved objects use lucene so this test can run them verbatim", src.Query.Language)
			}
			index := ""
			for _, r := range o.References {
				if r.Name == src.IndexRefName {
					index = views[r.ID]
				}
			}
			body := map[string]any{"size": 10, "query": map[string]any{"query_string": map[string]any{"query": src.Query.Query}}}
			if vs, ok := embedded(t, o, "visState").(map[string]any); ok {
				body["aggs"] = toAggs(vs["aggs"].([]any))
			}
			var res struct {
				Hits struct {
					Hits []any `json:"hits"`
				} `json:"hits"`
				Aggregations map[string]any `json:"aggregations"`
			}
			bb, _ := json.Marshal(body)
			r, err := esapi.SearchRequest{Index: strings.Split(index, ","), Body: bytes.NewReader(bb)}.Do(ctx, s.Client())
			if err != nil {
				t.Fatal(err)
			}
			defer r.Body.Close()
			if r.IsError() {
				t.Fatalf("search %s on %s: %s", bb, index, r.String())
			}
			json.NewDecoder(r.Body).Decode(&res)
			if len(res.Hits.Hits) == 0 {
				t.Errorf("query %q on %s: no hits", src.Query.Query, index)
			}
			checkBuckets(t, res.Aggregations)
		})
	}
}

// toAggs turns a legacy visualization's aggs (count + date_histogram/terms
// buckets, nested in order) into Query DSL.
func toAggs(aggs []any) map[string]any {
	root := map[string]any{}
	cur := root
	for _, a := range aggs {
		m := a.(map[string]any)
		p := m["params"].(map[string]any)
		var agg map[string]any
		switch m["type"] {
		case "count":
			continue
		case "date_histogram":
			agg = map[string]any{"date_histogram": map[string]any{"field": p["field"], "fixed_interval": "1h", "min_doc_count": 1}}
		case "terms":
			agg = map[string]any{"terms": map[string]any{"field": p["field"], "size": p["size"]}}
		}
		next := map[string]any{}
		agg["aggs"] = next
		cur["a"+m["id"].(string)] = agg
		cur = next
	}
	return root
}

// checkBuckets requires every aggregation level to have a bucket.
func checkBuckets(t *testing.T, aggs map[string]any) {
	t.Helper()
	for name, v := range aggs {
		m, ok := v.(map[string]any)
		if !ok {
			continue
		}
		buckets, ok := m["buckets"].([]any)
		if !ok {
			continue
		}
		if len(buckets) == 0 {
			t.Errorf("aggregation %s: no buckets", name)
			continue
		}
		checkBuckets(t, buckets[0].(map[string]any))
	}
}
