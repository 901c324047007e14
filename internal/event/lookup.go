package event

// Lookup finds the dotted ECS path (e.g. "process.parent.pid") in a decoded
// JSON document that may use nested objects ({"event":{"id":…}}), dotted
// keys ({"event.id":…}) or a mix of both, as documents from other producers
// do. It is the one reader of documents by path: the CLI, the demo and the
// tests use it, so they agree on what a field's value is.
func Lookup(doc map[string]any, path string) (any, bool) {
	if v, ok := doc[path]; ok {
		return v, true
	}
	for i := 0; i < len(path); i++ {
		if path[i] != '.' {
			continue
		}
		sub, ok := doc[path[:i]].(map[string]any)
		if !ok {
			continue
		}
		if v, ok := Lookup(sub, path[i+1:]); ok {
			return v, true
		}
	}
	return nil, false
}
