package elasticsearch

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "regenerate dashboards/elasticsearch/ecs_fields.json and the rendered templates")

// ecsFlatPath is the ECS field list shipped beside the project (read-only).
const ecsFlatPath = "../../../testing/ecs/ecs_flat.yml"

const (
	ecsFieldsPath    = "../../../dashboards/elasticsearch/ecs_fields.json"
	renderedTemplDir = "../../../dashboards/elasticsearch/templates"
)

type ecsFlat struct {
	Type        string `yaml:"type"`
	IgnoreAbove int    `yaml:"ignore_above"`
	MultiFields []struct {
		Name string `yaml:"name"`
		Type string `yaml:"type"`
	} `yaml:"multi_fields"`
}

func loadECSFlat(t *testing.T) map[string]ecsFlat {
	t.Helper()
	raw, err := os.ReadFile(ecsFlatPath)
	if err != nil {
		t.Fatalf("read ECS field list: %v (testing/ecs/ecs_flat.yml is part of the repository)", err)
	}
	m := map[string]ecsFlat{}
	if err := yaml.Unmarshal(raw, &m); err != nil {
		t.Fatalf("parse %s: %v", ecsFlatPath, err)
	}
	return m
}

// extraECSFields are ECS fields the dashboards and docs use beyond what the
// event model emits today.
var extraECSFields = []string{"data_stream.type", "data_stream.dataset", "data_stream.namespace", "event.original"}

// TestECSFields checks dashboards/elasticsearch/ecs_fields.json against
// ECS: every entry has the ECS type and multi-fields, and every ECS field
// the event model can emit is mapped. -update regenerates the file.
func TestECSFields(t *testing.T) {
	t.Parallel()
	flat := loadECSFlat(t)
	var want []ECSField
	names := append([]string{}, extraECSFields...)
	for _, l := range EventLeaves() {
		if !strings.HasPrefix(l.Name(), "tillwatch.") {
			names = append(names, l.Name())
		}
	}
	sort.Strings(names)
	for i, n := range names {
		if i > 0 && names[i-1] == n {
			continue
		}
		f, ok := flat[n]
		if !ok {
			t.Errorf("%s is emitted by the event model but is not an ECS field", n)
			continue
		}
		e := ECSField{Name: n, Type: f.Type, IgnoreAbove: f.IgnoreAbove}
		for _, mf := range f.MultiFields {
			e.MultiFields = append(e.MultiFields, MultiField{Name: mf.Name, Type: mf.Type})
		}
		want = append(want, e)
	}
	wantJSON, _ := json.MarshalIndent(want, "", "  ")
	wantJSON = append(wantJSON, '\n')
	if *update {
		if err := os.WriteFile(ecsFieldsPath, wantJSON, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := LoadECSFields()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]ECSField{}
	for _, g := range got {
		byName[g.Name] = g
		f, ok := flat[g.Name]
		if !ok {
			t.Errorf("ecs_fields.json maps %s, which ECS does not define", g.Name)
			continue
		}
		if g.Type != f.Type {
			t.Errorf("ecs_fields.json: %s is %s, ECS says %s", g.Name, g.Type, f.Type)
		}
		if len(g.MultiFields) != len(f.MultiFields) {
			t.Errorf("ecs_fields.json: %s has %d multi-fields, ECS %d", g.Name, len(g.MultiFields), len(f.MultiFields))
		}
	}
	for _, w := range want {
		if _, ok := byName[w.Name]; !ok {
			t.Errorf("%s (emitted by the event model) is not mapped; run: go test ./collector/store/elasticsearch -run 'TestECSFields|TestRenderedTemplates' -update", w.Name)
		}
	}
}

// TestTemplateTypes checks each rendered type per capability set: ECS's own
// type where the cluster has it, the documented core fallback where not.
func TestTemplateTypes(t *testing.T) {
	t.Parallel()
	flat := loadECSFlat(t)
	tests := []struct {
		name string
		caps Capabilities
	}{
		{"core only (the test node, OSS)", Capabilities{}},
		{"full distribution", Capabilities{Wildcard: true, ConstantKeyword: true, MatchOnlyText: true}},
	}
	fallback := map[string]string{"wildcard": "keyword", "constant_keyword": "keyword", "match_only_text": "text"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tpls, err := Templates(tc.caps)
			if err != nil {
				t.Fatal(err)
			}
			props := MappedFields(tpls)
			full := tc.caps.Wildcard
			for name, typ := range props {
				if strings.HasPrefix(name, "tillwatch.") {
					continue
				}
				base, sub, isMulti := splitMulti(name, props)
				f, ok := flat[base]
				if !ok {
					t.Errorf("%s mapped but not in ECS", name)
					continue
				}
				want := f.Type
				if isMulti {
					want = ""
					for _, mf := range f.MultiFields {
						if mf.Name == sub {
							want = mf.Type
						}
					}
				}
				if !full {
					if fb, ok := fallback[want]; ok {
						want = fb
					}
				}
				if typ != want {
					t.Errorf("%s: mapped %s, want %s", name, typ, want)
				}
			}
			for _, l := range EventLeaves() {
				if _, ok := props[l.Name()]; !ok {
					t.Errorf("event field %s has no mapping", l.Name())
				}
			}
		})
	}
}

// splitMulti tells a multi-field (process.command_line.text) from a field.
func splitMulti(name string, props map[string]string) (base, sub string, multi bool) {
	i := strings.LastIndex(name, ".")
	if i < 0 {
		return name, "", false
	}
	if _, parentIsField := props[name[:i]]; parentIsField {
		return name[:i], name[i+1:], true
	}
	return name, "", false
}

// TestRenderedTemplates keeps dashboards/elasticsearch/templates (what an
// operator installs by hand, portable core-type variant) equal to what the
// collector installs on a cluster without x-pack.
func TestRenderedTemplates(t *testing.T) {
	t.Parallel()
	tpls, err := Templates(Capabilities{})
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		os.RemoveAll(renderedTemplDir)
		if err := os.MkdirAll(renderedTemplDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, tp := range tpls {
		file := strings.ReplaceAll(strings.TrimPrefix(tp.Path, "_"), "/", "-") + ".json"
		seen[file] = true
		body, _ := json.MarshalIndent(tp.Body, "", "  ")
		body = append(body, '\n')
		path := filepath.Join(renderedTemplDir, file)
		if *update {
			if err := os.WriteFile(path, body, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("%s is stale or missing (%v); run go test ./collector/store/elasticsearch -run TestRenderedTemplates -update", path, err)
		}
	}
	entries, _ := os.ReadDir(renderedTemplDir)
	for _, e := range entries {
		if !seen[e.Name()] && strings.HasSuffix(e.Name(), ".json") {
			t.Errorf("%s is not a template the collector installs; remove it", e.Name())
		}
	}
}

// TestClaimTouchThrottlesLastSeenWrites: a host's last_seen is written from
// batches at most every touchEvery per collector; a clock that went back
// does not silence it.
func TestClaimTouchThrottlesLastSeenWrites(t *testing.T) {
	t.Parallel()
	s := &Store{}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		host string
		at   time.Time
		want bool
	}{
		{"h1", t0, true},
		{"h1", t0.Add(time.Second), false},
		{"h2", t0.Add(time.Second), true},
		{"h1", t0.Add(touchEvery), true},
		{"h1", t0.Add(touchEvery + time.Second), false},
		{"h1", t0, true}, // the clock went back
	}
	for i, st := range steps {
		if got := s.claimTouch(st.host, st.at); got != st.want {
			t.Errorf("step %d: claimTouch(%s, +%s) = %v, want %v", i, st.host, st.at.Sub(t0), got, st.want)
		}
	}
}
