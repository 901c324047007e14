package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/internal/event"
)

var now = time.Date(2025, 5, 1, 10, 0, 0, 0, time.UTC)

const goodAlert = `{"@timestamp":"2025-05-01T09:59:00Z","event":{"id":"a1","kind":"alert","severity":73},"host":{"id":"till-1"},"rule":{"id":"rmm.anydesk","ruleset":"rmm"},"process":{"command_line":"a < b && c"}}`

func TestParseLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		line    string
		wantErr string // substring; empty means valid
	}{
		{"alert", goodAlert, ""},
		{"telemetry", `{"@timestamp":"2025-05-01T09:59:00.123456789+02:00","event":{"id":"e1","kind":"event","dataset":"tillwatch.process"},"host":{"id":"till-1"}}`, ""},
		{"dotted keys", `{"@timestamp":"2025-05-01T09:59:00Z","event.id":"e2","event.kind":"state","host.id":"till-1"}`, ""},
		{"not json", `hello`, "not a JSON object"},
		{"array", `[1,2]`, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"trailing", `{"a":1} {"b":2}`, "trailing data"},
		{"missing id", `{"@timestamp":"2025-05-01T09:59:00Z","event":{"kind":"event"},"host":{"id":"till-1"}}`, "event.id is required"},
		{"numeric id", `{"@timestamp":"2025-05-01T09:59:00Z","event":{"id":5,"kind":"event"},"host":{"id":"till-1"}}`, "event.id must be a non-empty string"},
		{"control char id", `{"@timestamp":"2025-05-01T09:59:00Z","event":{"id":"a\u0007b","kind":"event"},"host":{"id":"till-1"}}`, "event.id must be printable"},
		{"bad kind", `{"@timestamp":"2025-05-01T09:59:00Z","event":{"id":"x","kind":"nope"},"host":{"id":"till-1"}}`, "not an ECS kind"},
		{"bad timestamp", `{"@timestamp":"yesterday","event":{"id":"x","kind":"event"},"host":{"id":"till-1"}}`, "RFC 3339"},
		{"missing timestamp", `{"event":{"id":"x","kind":"event"},"host":{"id":"till-1"}}`, "@timestamp is required"},
		{"spoofed host", `{"@timestamp":"2025-05-01T09:59:00Z","event":{"id":"x","kind":"event"},"host":{"id":"till-2"}}`, "does not match the credential"},
		{"alert without rule", `{"@timestamp":"2025-05-01T09:59:00Z","event":{"id":"x","kind":"alert"},"host":{"id":"till-1"}}`, "rule.id is required; rule.ruleset is required"},
		{"alert bad ruleset", `{"@timestamp":"2025-05-01T09:59:00Z","event":{"id":"x","kind":"alert"},"host":{"id":"till-1"},"rule":{"id":"r","ruleset":"made-up"}}`, "rule.ruleset must be one of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc, err := ParseLine([]byte(tt.line), "till-1", now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(doc.JSON, &m); err != nil {
				t.Fatalf("stored doc is not JSON: %v", err)
			}
			v, ok := lookup(m, "event.ingested")
			if !ok || v != now.Format(time.RFC3339Nano) {
				t.Errorf("event.ingested = %v", v)
			}
			if doc.HostID != "till-1" || doc.EventID == "" || doc.Timestamp.IsZero() {
				t.Errorf("doc %+v", doc)
			}
		})
	}
}

func TestParseLineKeepsDocument(t *testing.T) {
	t.Parallel()
	doc, err := ParseLine([]byte(goodAlert), "till-1", now)
	if err != nil {
		t.Fatal(err)
	}
	if doc.RuleID != "rmm.anydesk" || doc.Ruleset != "rmm" || doc.Severity != 73 || doc.Kind != "alert" {
		t.Errorf("doc %+v", doc)
	}
	if !bytes.Contains(doc.JSON, []byte(`"command_line":"a < b && c"`)) {
		t.Errorf("document rewritten: %s", doc.JSON)
	}
}

// TestParseLineRewritesSafely: the stored document is the sent one, in its
// order and with its numbers as sent, plus the collector's event.ingested;
// what could make a later reader see another document than the collector
// checked is refused.
func TestParseLineRewritesSafely(t *testing.T) {
	t.Parallel()
	head := `{"@timestamp":"2025-05-01T09:59:00Z",`
	refused := []struct {
		name, line, wantErr string
	}{
		{"duplicate host", head + `"event":{"id":"x","kind":"event"},"host":{"id":"till-2"},"host":{"id":"till-1"}}`, "duplicate"},
		{"duplicate deep", head + `"event":{"id":"x","kind":"event"},"host":{"id":"till-1"},"process":{"pid":1,"pid":2}}`, "duplicate"},
		{"duplicate in an array", head + `"event":{"id":"x","kind":"event"},"host":{"id":"till-1"},"a":[{"k":1,"k":2}]}`, "duplicate"},
		{"one field in two forms", head + `"event":{"id":"x","kind":"event"},"event.id":"y","host":{"id":"till-1"}}`, "event.id is given twice"},
		{"host in two forms", head + `"event":{"id":"x","kind":"event"},"host":{"id":"till-2"},"host.id":"till-1"}`, "host.id is given twice"},
		{"\\x is not a JSON escape", head + `"event":{"id":"x","kind":"event"},"host":{"id":"till-1"},"m":"` + `\xff` + `"}`, ""},
		{"raw invalid UTF-8", head + `"event":{"id":"x","kind":"event"},"host":{"id":"till-1"},"m":"` + "\xff" + `"}`, "invalid JSON"},
	}
	for _, tc := range refused {
		_, err := ParseLine([]byte(tc.line), "till-1", now)
		if tc.wantErr == "" {
			if err == nil || !strings.Contains(err.Error(), "invalid JSON") {
				t.Errorf("%s: err = %v, want invalid JSON (\\x is not a JSON escape)", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.wantErr)
		}
	}

	sent := head + `"event":{"id":"x","kind":"event","ingested":"1999-01-01T00:00:00Z"},"host":{"id":"till-1"},"file":{"size":12345678901234567890,"mtime":1.50}}`
	doc, err := ParseLine([]byte(sent), "till-1", now)
	if err != nil {
		t.Fatal(err)
	}
	want := head + `"event":{"id":"x","kind":"event","ingested":"` + now.Format(time.RFC3339Nano) + `"},"host":{"id":"till-1"},"file":{"size":12345678901234567890,"mtime":1.50}}`
	if string(doc.JSON) != want {
		t.Errorf("stored\n%s\nwant\n%s", doc.JSON, want)
	}
	// No event object: the collector's field is a dotted member at the end.
	doc, err = ParseLine([]byte(`{"@timestamp":"2025-05-01T09:59:00Z","event.id":"e","event.kind":"state","event.ingested":"x","host.id":"till-1"}`), "till-1", now)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"@timestamp":"2025-05-01T09:59:00Z","event.id":"e","event.kind":"state","host.id":"till-1","event.ingested":"` + now.Format(time.RFC3339Nano) + `"}`; string(doc.JSON) != want {
		t.Errorf("stored\n%s\nwant\n%s", doc.JSON, want)
	}
}

// TestParseLineDropsOnlyTheSendersIngested: the stored document is the sent
// bytes with the sender's event.ingested cut out wherever and however it
// was written, and the collector's written once, commas kept right.
func TestParseLineDropsOnlyTheSendersIngested(t *testing.T) {
	t.Parallel()
	at := now.Format(time.RFC3339Nano)
	ids := `"@timestamp":"2025-05-01T09:59:00Z","event.id":"e","event.kind":"state","host.id":"till-1"`
	tests := []struct{ name, sent, want string }{
		{"first member, dotted", `{"event.ingested":"x",` + ids + `}`, `{` + ids + `,"event.ingested":"` + at + `"}`},
		{"only member of event", `{` + ids + `,"event":{"ingested":"x"}}`, `{` + ids + `,"event":{"ingested":"` + at + `"}}`},
		{"first of event, spaced", `{` + ids + `, "event" : { "ingested" : "x" , "action" : "a" } }`,
			`{` + ids + `, "event" : { "action" : "a" ,"ingested":"` + at + `"} }`},
		{"escaped name", `{` + ids + `,"event\u002eingested":"x","b":1}`, `{` + ids + `,"b":1,"event.ingested":"` + at + `"}`},
		{"both forms", `{"event.ingested":1,"event":{"action":"a","ingested":{"deep":[1]}},` + ids + `}`,
			`{"event":{"action":"a","ingested":"` + at + `"},` + ids + `}`},
		{"empty event object", `{` + ids + `,"event":{}}`, `{` + ids + `,"event":{"ingested":"` + at + `"}}`},
		{"spaces around the document", " \t{" + ids + "}\r ", `{` + ids + `,"event.ingested":"` + at + `"}`},
		{"an object named \"\" is not the document", `{` + ids + `,"":{"event.ingested":"x"}}`,
			`{` + ids + `,"":{"event.ingested":"x"},"event.ingested":"` + at + `"}`},
	}
	for _, tc := range tests {
		doc, err := ParseLine([]byte(tc.sent), "till-1", now)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if string(doc.JSON) != tc.want {
			t.Errorf("%s: stored\n%s\nwant\n%s", tc.name, doc.JSON, tc.want)
		}
	}
}

func TestParseBatch(t *testing.T) {
	t.Parallel()
	big := `{"pad":"` + strings.Repeat("x", api.MaxEventBytes) + `"}`
	body := strings.Join([]string{
		goodAlert, // 1
		"",        // 2: blank lines are skipped but counted
		"garbage", // 3
		strings.Replace(goodAlert, `"a1"`, `"a2"`, 1), // 4
		big, // 5
		strings.Replace(goodAlert, `"till-1"`, `"till-9"`, 1), // 6
	}, "\n") + "\n"
	res, err := ParseBatch(strings.NewReader(body), "till-1", now)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Docs) != 2 || res.Docs[0].EventID != "a1" || res.Docs[1].EventID != "a2" {
		t.Fatalf("docs %+v", res.Docs)
	}
	var lines []int
	for _, r := range res.Rejected {
		lines = append(lines, r.Line)
	}
	if len(lines) != 3 || lines[0] != 3 || lines[1] != 5 || lines[2] != 6 {
		t.Fatalf("rejected lines %v (%+v)", lines, res.Rejected)
	}
	if res.Rejected[2].EventID != "a1" {
		t.Errorf("rejection lost the event id: %+v", res.Rejected[2])
	}
}

func TestParseBatchLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body io.Reader
		want error
	}{
		{"empty", strings.NewReader(""), ErrEmpty},
		{"blank", strings.NewReader("\n \n\n"), ErrEmpty},
		{"too many", strings.NewReader(strings.Repeat("{}\n", api.MaxBatchEvents+1)), ErrTooManyEvents},
		{"too large one line", io.LimitReader(zeros{}, api.MaxBatchBytes+1), ErrTooLarge},
		{"too large many lines", strings.NewReader(strings.Repeat(strings.Repeat("x", 4000)+"\n", api.MaxBatchBytes/4000+1)), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseBatch(tt.body, "h", now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	// Exactly the maximum number of events is fine.
	res, err := ParseBatch(strings.NewReader(strings.Repeat("{}\n", api.MaxBatchEvents)), "h", now)
	if err != nil || len(res.Rejected) != api.MaxBatchEvents {
		t.Fatalf("max batch: %v, %d rejected", err, len(res.Rejected))
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func FuzzIngestLine(f *testing.F) {
	f.Add([]byte(goodAlert))
	f.Add([]byte(`{"@timestamp":"2025-05-01T09:59:00Z","event.id":"e2","event.kind":"state","host.id":"till-1"}`))
	f.Add([]byte(`{"event":{"id":"x"},"event.id":"y","host":{"id":"till-1"}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"a":1e400}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		doc, err := ParseLine(line, "till-1", now)
		if err != nil {
			return
		}
		// Whatever was accepted is a JSON object that satisfies the contract
		// and parses again to the same identifiers.
		again, err := ParseLine(doc.JSON, "till-1", now)
		if err != nil {
			t.Fatalf("stored doc does not re-parse: %v\n%s", err, doc.JSON)
		}
		if again.EventID != doc.EventID || again.HostID != "till-1" || again.Kind != doc.Kind || !again.Timestamp.Equal(doc.Timestamp) {
			t.Fatalf("re-parse changed identity: %+v vs %+v", again, doc)
		}
		// And it is the sent document, member for member, with only
		// event.ingested changed: the collector's, once.
		sent, stored := decodeLoose(t, line), decodeLoose(t, doc.JSON)
		dropIngested(sent)
		if n := dropIngested(stored); n != 1 {
			t.Fatalf("stored doc has event.ingested %d times: %s", n, doc.JSON)
		}
		if !reflect.DeepEqual(sent, stored) {
			t.Fatalf("stored doc differs from the sent one\nsent   %s\nstored %s", line, doc.JSON)
		}
	})
}

// decodeLoose decodes a document with encoding/json, numbers as sent.
func decodeLoose(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// dropIngested removes event.ingested in both forms and says how many it
// found holding the collector's time.
func dropIngested(m map[string]any) int {
	n := 0
	if v, ok := m["event.ingested"]; ok {
		if v == now.Format(time.RFC3339Nano) {
			n++
		}
		delete(m, "event.ingested")
	}
	if ev, ok := m["event"].(map[string]any); ok {
		if v, ok := ev["ingested"]; ok {
			if v == now.Format(time.RFC3339Nano) {
				n++
			}
			delete(ev, "ingested")
		}
	}
	return n
}

// lookup finds a dotted ECS path in a document (nested, dotted or mixed).
func lookup(m map[string]any, path string) (any, bool) { return event.Lookup(m, path) }
