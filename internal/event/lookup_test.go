package event

import (
	"encoding/json"
	"testing"
)

func TestLookup(t *testing.T) {
	t.Parallel()
	var doc map[string]any
	if err := json.Unmarshal([]byte(`{"event":{"id":"n1","kind":"alert"},"event.action":"dotted",
		"process":{"parent.pid":7,"parent":{"name":"sh"}},"rule":"not an object","host.name":null}`), &doc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want any
		ok   bool
	}{
		{"event.id", "n1", true},
		{"event.action", "dotted", true},
		{"process.parent.pid", float64(7), true},
		{"process.parent.name", "sh", true},
		{"host.name", nil, true},
		{"rule.id", nil, false},
		{"event.missing", nil, false},
		{"", nil, false},
	} {
		v, ok := Lookup(doc, tc.path)
		if v != tc.want || ok != tc.ok {
			t.Errorf("Lookup(%q) = %v, %v; want %v, %v", tc.path, v, ok, tc.want, tc.ok)
		}
	}
}
