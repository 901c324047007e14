package elasticsearch

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/dashboards"
	"github.com/tillwatch/tillwatch/internal/event"
)

// Data streams (docs/reference.md "Elasticsearch layout"), one per dataset, each
// logs-<dataset>-<namespace>. Health is our extension: sensor health events
// are neither process nor file telemetry.
const (
	StreamAlerts  = "tillwatch.alerts"
	StreamProcess = "tillwatch.process"
	StreamFile    = "tillwatch.file"
	StreamAudit   = "tillwatch.audit"
	StreamHealth  = "tillwatch.health"
)

// Streams lists every data stream's dataset.
var Streams = []string{StreamAlerts, StreamProcess, StreamFile, StreamAudit, StreamHealth}

// TemplateVersion is written into every template's version so an operator
// can see which collector installed it; bump it when a mapping changes.
const TemplateVersion = 1

// templatePriority beats the built-in logs-*-* template (priority 100) of a
// full distribution, so our mappings apply to our streams.
const templatePriority = 200

// Component template names.
const (
	compSettings = "tillwatch@settings"
	compECS      = "tillwatch@ecs"
	compFields   = "tillwatch@fields"
)

// ECSField is one entry of dashboards/elasticsearch/ecs_fields.json.
type ECSField struct {
	Name        string       `json:"name"`
	Type        string       `json:"type"`
	IgnoreAbove int          `json:"ignore_above,omitempty"`
	MultiFields []MultiField `json:"multi_fields,omitempty"`
}

// MultiField is an ECS multi-field (e.g. process.command_line.text).
type MultiField struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Capabilities says which of ECS's non-core field types the cluster has.
// A cluster without x-pack (or mapper-extras) lacks them; the templates then
// use the closest core type so every query on the field still works.
type Capabilities struct {
	Wildcard        bool // x-pack: falls back to keyword
	ConstantKeyword bool // x-pack: falls back to keyword
	MatchOnlyText   bool // mapper-extras module: falls back to text
}

// FieldType maps an ECS type to the type installed on a cluster with caps.
func (c Capabilities) FieldType(ecsType string) string {
	switch {
	case ecsType == "wildcard" && !c.Wildcard, ecsType == "constant_keyword" && !c.ConstantKeyword:
		return "keyword"
	case ecsType == "match_only_text" && !c.MatchOnlyText:
		return "text"
	}
	return ecsType
}

// LoadECSFields parses the embedded ECS field list.
func LoadECSFields() ([]ECSField, error) {
	var fs []ECSField
	if err := json.Unmarshal(dashboards.ECSFields, &fs); err != nil {
		return nil, fmt.Errorf("dashboards/elasticsearch/ecs_fields.json: %w", err)
	}
	return fs, nil
}

// Template is one named template body and the API path it is PUT to.
type Template struct {
	Path string // e.g. _component_template/tillwatch@ecs
	Body map[string]any
}

// Templates renders every component and index template for a cluster with
// caps, in installation order (components first).
func Templates(caps Capabilities) ([]Template, error) {
	ecs, err := LoadECSFields()
	if err != nil {
		return nil, err
	}
	meta := map[string]any{"managed_by": "tillwatch-collector", "managed": true}
	ecsProps := map[string]any{}
	for _, f := range ecs {
		m := map[string]any{"type": caps.FieldType(f.Type)}
		if f.IgnoreAbove > 0 && m["type"] == "keyword" {
			m["ignore_above"] = f.IgnoreAbove
		} else if m["type"] == "keyword" && f.Type != "keyword" {
			m["ignore_above"] = 1024 // what ECS gives keyword fields
		}
		if len(f.MultiFields) > 0 {
			mf := map[string]any{}
			for _, x := range f.MultiFields {
				mf[x.Name] = map[string]any{"type": caps.FieldType(x.Type)}
			}
			m["fields"] = mf
		}
		if err := setPath(ecsProps, f.Name, m); err != nil {
			return nil, err
		}
	}
	twProps := map[string]any{}
	for _, l := range modelLeaves("tillwatch", reflect.TypeOf(event.Tillwatch{})) {
		if err := setPath(twProps, l.name, map[string]any{"type": l.esType}); err != nil {
			return nil, err
		}
	}
	out := []Template{
		{Path: "_component_template/" + compSettings, Body: map[string]any{
			"version": TemplateVersion, "_meta": meta,
			"template": map[string]any{"settings": map[string]any{
				// A value of the wrong type (a sensor bug, an old sensor) is
				// kept in _source and flagged in _ignored instead of
				// rejecting the whole document: an alert is never lost to
				// a mapping conflict.
				"index.mapping.ignore_malformed":   true,
				"index.mapping.total_fields.limit": 2000,
			}},
		}},
		{Path: "_component_template/" + compECS, Body: map[string]any{
			"version": TemplateVersion, "_meta": meta,
			"template": map[string]any{"mappings": map[string]any{
				// Unknown strings become keyword (ECS's own default), so a
				// field added to a sensor is searchable before the templates
				// learn its type.
				"dynamic_templates": []any{map[string]any{"strings_as_keyword": map[string]any{
					"match_mapping_type": "string",
					"mapping":            map[string]any{"type": "keyword", "ignore_above": 1024},
				}}},
				"properties": ecsProps,
			}},
		}},
		{Path: "_component_template/" + compFields, Body: map[string]any{
			"version": TemplateVersion, "_meta": meta,
			"template": map[string]any{"mappings": map[string]any{"properties": twProps}},
		}},
	}
	for _, ds := range Streams {
		out = append(out, Template{Path: "_index_template/logs-" + ds, Body: map[string]any{
			"version":        TemplateVersion,
			"_meta":          meta,
			"index_patterns": []string{"logs-" + ds + "-*"},
			"data_stream":    map[string]any{},
			"priority":       templatePriority,
			"composed_of":    []string{compSettings, compECS, compFields},
		}})
	}
	return out, nil
}

// setPath puts leaf at the dotted name inside an ES "properties" tree.
func setPath(props map[string]any, name string, leaf map[string]any) error {
	parts := strings.Split(name, ".")
	for _, p := range parts[:len(parts)-1] {
		obj, ok := props[p].(map[string]any)
		if !ok {
			obj = map[string]any{"properties": map[string]any{}}
			props[p] = obj
		}
		sub, ok := obj["properties"].(map[string]any)
		if !ok {
			return fmt.Errorf("mapping: %s: %s is both a field and an object", name, p)
		}
		props = sub
	}
	last := parts[len(parts)-1]
	if _, dup := props[last]; dup {
		return fmt.Errorf("mapping: %s mapped twice", name)
	}
	props[last] = leaf
	return nil
}

// Leaf is one JSON leaf of the event model: dotted name, Elasticsearch type
// derived from its Go type, and whether it is a list.
type Leaf struct {
	name   string
	esType string
	array  bool
}

// Name is the dotted field name.
func (l Leaf) Name() string { return l.name }

// Array reports whether the field holds a list.
func (l Leaf) Array() bool { return l.array }

var timeType = reflect.TypeOf(time.Time{})

// modelLeaves walks a struct type by its json tags; tillwatch.* is mapped
// from the model itself so a field added to the event is typed correctly
// without anyone editing a template.
func modelLeaves(prefix string, t reflect.Type) []Leaf {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []Leaf
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		full := prefix + "." + name
		ft, array := f.Type, false
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Slice {
			array, ft = true, ft.Elem()
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
		}
		switch {
		case ft == timeType:
			out = append(out, Leaf{full, "date", array})
		case ft.Kind() == reflect.Struct:
			for _, l := range modelLeaves(full, ft) {
				l.array = l.array || array
				out = append(out, l)
			}
		case ft.Kind() == reflect.Map:
			out = append(out, Leaf{full, "flattened", array})
		case ft.Kind() == reflect.String:
			out = append(out, Leaf{full, "keyword", array})
		case ft.Kind() == reflect.Bool:
			out = append(out, Leaf{full, "boolean", array})
		case ft.Kind() >= reflect.Int && ft.Kind() <= reflect.Uint64:
			out = append(out, Leaf{full, "long", array})
		case ft.Kind() == reflect.Float32 || ft.Kind() == reflect.Float64:
			out = append(out, Leaf{full, "double", array})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// EventLeaves returns every leaf field of event.Event (ECS and tillwatch.*).
func EventLeaves() []Leaf {
	var out []Leaf
	for _, l := range modelLeaves("x", reflect.TypeOf(event.Event{})) {
		l.name = strings.TrimPrefix(l.name, "x.")
		out = append(out, l)
	}
	return out
}

// stateMappings are the collector's own indices (not data streams): the
// state every collector sharing the cluster must agree on.
var stateMappings = map[string]map[string]any{
	"hosts": {"dynamic": "strict", "properties": map[string]any{
		"host_id":         map[string]any{"type": "keyword"},
		"host_name":       map[string]any{"type": "keyword"},
		"agent_id":        map[string]any{"type": "keyword"},
		"agent_version":   map[string]any{"type": "keyword"},
		"os":              map[string]any{"type": "keyword"},
		"labels":          map[string]any{"type": "flattened"},
		"mode":            map[string]any{"type": "keyword"},
		"health":          map[string]any{"type": "flattened"},
		"enrolled_at":     map[string]any{"type": "date_nanos"},
		"last_seen":       map[string]any{"type": "date_nanos"},
		"seq_max":         map[string]any{"type": "long"},
		"events_lost":     map[string]any{"type": "long"},
		"credential_hash": map[string]any{"type": "keyword"},
		"key_hash":        map[string]any{"type": "keyword"},
		"config_version":  map[string]any{"type": "keyword"},
		"rules_version":   map[string]any{"type": "keyword"},
	}},
	// Counters every collector polls (credentials.go): one document per
	// counter, its _version the value; changed_at says when it last moved.
	"generations": {"dynamic": "strict", "properties": map[string]any{
		"changed_at": map[string]any{"type": "date_nanos"},
	}},
	"tokens": {"dynamic": "strict", "properties": map[string]any{
		"role":       map[string]any{"type": "keyword"},
		"host_id":    map[string]any{"type": "keyword"},
		"created_at": map[string]any{"type": "date_nanos"},
		"expires_at": map[string]any{"type": "date_nanos"},
		"revoked":    map[string]any{"type": "boolean"},
		"uses":       map[string]any{"type": "long"},
		"max_uses":   map[string]any{"type": "long"},
	}},
	// Kill-switch commands (commands.go), one document per command, _id =
	// command id. signed is the envelope exactly as stored (payload and
	// signatures base64), kept whole and not indexed. seq orders commands
	// by creation and activated is the generation at which the command
	// became deliverable (0 while it waits for approvals); both are
	// nanosecond stamps, strictly increasing.
	"commands": {"dynamic": "strict", "properties": map[string]any{
		"id":        map[string]any{"type": "keyword"},
		"action":    map[string]any{"type": "keyword"},
		"targets":   map[string]any{"type": "keyword", "ignore_above": 1024},
		"issuer":    map[string]any{"type": "keyword"},
		"reason":    map[string]any{"type": "keyword", "ignore_above": 1024},
		"issued_at": map[string]any{"type": "date_nanos"},
		"not_after": map[string]any{"type": "date_nanos"},
		"state":     map[string]any{"type": "keyword"},
		"required":  map[string]any{"type": "integer"},
		"signed":    map[string]any{"type": "object", "enabled": false},
		"activated": map[string]any{"type": "long"},
		"seq":       map[string]any{"type": "long"},
	}},
	// Each addressed host's delivery of a command, _id = command id + "/" +
	// host id. not_after is the command's, copied so that a host's poll
	// skips expired commands without reading them; result is the sensor's
	// answer, kept whole.
	"command-hosts": {"dynamic": "strict", "properties": map[string]any{
		"command_id":   map[string]any{"type": "keyword"},
		"host_id":      map[string]any{"type": "keyword"},
		"state":        map[string]any{"type": "keyword"},
		"not_after":    map[string]any{"type": "date_nanos"},
		"delivered_at": map[string]any{"type": "date_nanos"},
		"acked_at":     map[string]any{"type": "date_nanos"},
		"result":       map[string]any{"type": "object", "enabled": false},
	}},
	// Documents Elasticsearch refused for good: kept whole (not indexed) with
	// the reason, so an alert is never dropped silently.
	"deadletter": {"dynamic": "strict", "properties": map[string]any{
		"@timestamp": map[string]any{"type": "date"},
		"event_id":   map[string]any{"type": "keyword"},
		"kind":       map[string]any{"type": "keyword"},
		"host_id":    map[string]any{"type": "keyword"},
		"stream":     map[string]any{"type": "keyword"},
		"error":      map[string]any{"type": "keyword", "ignore_above": 8191},
		"original":   map[string]any{"type": "keyword", "index": false, "doc_values": false},
	}},
}

// MappedFields flattens the explicit mappings of tpls to dotted field name ->
// type, multi-fields included (process.command_line.text). The dashboards
// test uses it to check that every field a saved object names exists.
func MappedFields(tpls []Template) map[string]string {
	out := map[string]string{}
	var walk func(prefix string, props map[string]any)
	walk = func(prefix string, props map[string]any) {
		for name, v := range props {
			m, ok := v.(map[string]any)
			if !ok {
				continue
			}
			full := prefix + name
			if sub, ok := m["properties"].(map[string]any); ok {
				walk(full+".", sub)
				continue
			}
			if typ, ok := m["type"].(string); ok {
				out[full] = typ
			}
			if mf, ok := m["fields"].(map[string]any); ok {
				for sub, sv := range mf {
					if sm, ok := sv.(map[string]any); ok {
						if typ, ok := sm["type"].(string); ok {
							out[full+"."+sub] = typ
						}
					}
				}
			}
		}
	}
	for _, t := range tpls {
		tpl, _ := t.Body["template"].(map[string]any)
		mappings, _ := tpl["mappings"].(map[string]any)
		if props, ok := mappings["properties"].(map[string]any); ok {
			walk("", props)
		}
	}
	return out
}
