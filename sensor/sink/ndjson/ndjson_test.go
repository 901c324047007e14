package ndjson

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/tillwatch/tillwatch/internal/event"
)

func TestAppendsOneObjectPerLine(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "alerts.ndjson")
	if err := os.WriteFile(path, []byte(`{"earlier":"run"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{event.NewID(), event.NewID()}
	for _, id := range ids {
		if err := s.Write(context.Background(), &event.Event{Event: event.Meta{Kind: event.KindAlert, ID: id}, Message: "line\nbreak"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want the earlier one plus 2 appended", len(lines))
	}
	if got := lines[2]["event"].(map[string]any)["id"]; got != ids[1] {
		t.Errorf("last id %v, want %s", got, ids[1])
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
}

func TestOpenFailsClearly(t *testing.T) {
	t.Parallel()
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "x.ndjson")); err == nil {
		t.Fatal("want an error for a missing directory")
	}
}
