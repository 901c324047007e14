package cfgfile

import (
	"errors"
	"io/fs"
)

// File is one file decoded by DecodeGlob.
type File[T any] struct {
	Name  string
	Value T
}

// DecodeGlob decodes, strictly, every file of fsys matching pattern (in
// name order) into a T. Files that cannot be read or decoded are left out
// and reported together in the error; the others are returned, so a rule
// loader can report every problem of every file at once.
func DecodeGlob[T any](fsys fs.FS, pattern string) ([]File[T], error) {
	names, err := fs.Glob(fsys, pattern)
	if err != nil {
		return nil, err
	}
	var out []File[T]
	var errs []error
	for _, name := range names {
		raw, err := fs.ReadFile(fsys, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var v T
		if err := Decode(name, raw, &v); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, File[T]{Name: name, Value: v})
	}
	return out, errors.Join(errs...)
}
