package cfgfile

import (
	"reflect"
	"strings"
	"time"
)

// Keys lists the dotted YAML keys of the config struct v (a struct or a
// pointer to one), nested structs flattened ("collector.url"), in field
// order. Docs tests use it to check that every key is documented.
func Keys(v any) []string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() && f.Type != reflect.TypeFor[time.Time]() {
				walk(prefix+name+".", f.Type)
				continue
			}
			out = append(out, prefix+name)
		}
	}
	walk("", t)
	return out
}
