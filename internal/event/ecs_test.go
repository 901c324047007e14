package event

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// ecsFlatPath is the ECS field list shipped beside the project (read-only).
const ecsFlatPath = "../../testing/ecs/ecs_flat.yml"

type ecsField struct {
	Type      string   `yaml:"type"`
	Normalize []string `yaml:"normalize"`
}

func loadECS(t *testing.T) map[string]ecsField {
	t.Helper()
	raw, err := os.ReadFile(ecsFlatPath)
	if err != nil {
		t.Fatalf("read ECS field list: %v (testing/ecs/ecs_flat.yml is part of the repository)", err)
	}
	fields := map[string]ecsField{}
	if err := yaml.Unmarshal(raw, &fields); err != nil {
		t.Fatalf("parse %s: %v", ecsFlatPath, err)
	}
	return fields
}

// leaf is one JSON leaf field of the model: its dotted name and Go type.
type leaf struct {
	name  string
	typ   reflect.Type
	array bool
}

var timeType = reflect.TypeOf(time.Time{})

// leaves walks a struct type by its json tags and returns every leaf field.
func leaves(prefix string, t reflect.Type) []leaf {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []leaf
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		full := name
		if prefix != "" {
			full = prefix + "." + name
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft == timeType:
			out = append(out, leaf{full, ft, false})
		case ft.Kind() == reflect.Struct:
			out = append(out, leaves(full, ft)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			// Arrays of objects (tillwatch.process.ancestry) are nested types.
			out = append(out, leaf{full, ft, true})
		case ft.Kind() == reflect.Slice:
			out = append(out, leaf{full, ft.Elem(), true})
		default:
			out = append(out, leaf{full, ft, false})
		}
	}
	return out
}

// compatible reports whether a Go kind can be indexed as the ECS type.
func compatible(goType reflect.Type, ecsType string) bool {
	if goType == timeType {
		return ecsType == "date"
	}
	switch goType.Kind() {
	case reflect.String:
		switch ecsType {
		case "keyword", "wildcard", "constant_keyword", "match_only_text", "text", "ip", "version":
			return true
		}
	case reflect.Int, reflect.Int32, reflect.Int64:
		switch ecsType {
		case "long", "integer", "short", "byte":
			return true
		}
	case reflect.Float32, reflect.Float64:
		switch ecsType {
		case "float", "scaled_float", "double", "half_float":
			return true
		}
	case reflect.Bool:
		return ecsType == "boolean"
	case reflect.Map:
		return ecsType == "object"
	}
	return false
}

// TestFieldsAreECS checks every non-tillwatch field the model can emit
// against the ECS field list: the name exists, the type is compatible, and
// Go slices sit only where ECS allows arrays.
func TestFieldsAreECS(t *testing.T) {
	t.Parallel()
	ecs := loadECS(t)
	all := leaves("", reflect.TypeOf(Event{}))
	if len(all) < 60 {
		t.Fatalf("walked only %d fields; the reflection walk is broken", len(all))
	}
	checked := 0
	for _, l := range all {
		if strings.HasPrefix(l.name, "tillwatch.") {
			continue
		}
		checked++
		def, ok := ecs[l.name]
		if !ok {
			t.Errorf("%s: not an ECS field (move it under tillwatch.)", l.name)
			continue
		}
		if !compatible(l.typ, def.Type) {
			t.Errorf("%s: Go %s is not compatible with ECS type %s", l.name, l.typ, def.Type)
		}
		if l.array && !contains(def.Normalize, "array") && def.Type != "object" {
			t.Errorf("%s: Go slice but ECS does not declare the field an array", l.name)
		}
	}
	t.Logf("checked %d ECS fields", checked)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
