package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// field is one scalar the collector reads from a document, captured while
// the document is copied.
type field struct {
	kind jsontext.Kind // '"' string, '0' number, 't'/'f' bool, 'n' null, '{' object, '[' array
	str  string        // the unquoted string, or the number's literal text
}

// wanted are the dotted paths ParseLine reads. A document may give them
// nested ({"event":{"id":…}}), dotted ({"event.id":…}) or mixed; each must
// appear once.
var wanted = map[string]bool{
	"@timestamp": true, "event.id": true, "event.kind": true, "event.dataset": true, "event.severity": true,
	"event.sequence": true, "host.id": true, "rule.id": true, "rule.ruleset": true,
}

// ingestedPath is the field the collector sets on every document.
const ingestedPath = "event.ingested"

// deep stands for the path of any member more than two components down:
// none of them is read or rewritten.
const deep = "\x00deep"

// rewrite copies one JSON object token by token, in its own member order
// and with its numbers exactly as sent, and on the way
//   - refuses duplicate member names at any depth, and a wanted field given
//     twice in different forms: a document must not tell the collector one
//     host.id and a later reader another;
//   - refuses invalid UTF-8 and anything after the object;
//   - captures the wanted fields;
//   - drops any event.ingested the sender set and writes the collector's:
//     inside the top-level "event" object when there is one, else as a
//     dotted top-level member.
//
// One pass of github.com/go-json-experiment/json's tokenizer replaces a
// decode into maps and a re-encode that sorted every object's keys: that
// pair was a third of the collector's CPU at full ingest (issue 9).
func rewrite(line []byte, ingested string) (map[string]field, []byte, error) {
	fields := map[string]field{}
	dec := jsontext.NewDecoder(bytes.NewReader(line))
	var out bytes.Buffer
	out.Grow(len(line) + 64)
	// The decoder has refused duplicate names and invalid UTF-8 already;
	// the encoder need not check the same bytes again.
	enc := jsontext.NewEncoder(&out, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if dec.PeekKind() != '{' {
		_, err := dec.ReadToken()
		if err == nil {
			err = errors.New("not an object")
		}
		return fields, nil, fmt.Errorf("not a JSON object: %s", oneLine(err.Error()))
	}
	r := rewriter{dec: dec, enc: enc, fields: fields, ingested: ingested}
	if err := r.object(""); err != nil {
		return fields, nil, err
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return fields, nil, errors.New("trailing data after the JSON object")
	}
	return fields, bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

type rewriter struct {
	dec      *jsontext.Decoder
	enc      *jsontext.Encoder
	fields   map[string]field
	ingested string
	placed   bool // event.ingested written inside the "event" object
}

// object copies the object starting at the decoder's next token; prefix is
// its dotted path ("" for the document).
func (r *rewriter) object(prefix string) error {
	if err := r.copyToken(); err != nil { // '{'
		return err
	}
	for r.dec.PeekKind() != '}' {
		name, err := r.dec.ReadToken()
		if err != nil {
			return invalid(err)
		}
		// Every checked path has at most two components, so below that
		// depth no path is built (deep marks "further down").
		full := deep
		switch {
		case prefix == "":
			full = name.String()
		case prefix != deep && !strings.Contains(prefix, "."):
			full = prefix + "." + name.String()
		}
		if full == ingestedPath { // the collector's own field: the sender's is dropped
			if _, err := r.dec.ReadValue(); err != nil {
				return invalid(err)
			}
			continue
		}
		if err := r.enc.WriteToken(name); err != nil {
			return invalid(err)
		}
		kind := r.dec.PeekKind()
		if wanted[full] {
			if _, dup := r.fields[full]; dup {
				return fmt.Errorf("%s is given twice", full)
			}
		}
		switch kind {
		case '{':
			if wanted[full] {
				r.fields[full] = field{kind: kind}
			}
			if err := r.object(full); err != nil {
				return err
			}
		default:
			v, err := r.dec.ReadValue()
			if err != nil {
				return invalid(err)
			}
			if wanted[full] {
				f := field{kind: kind}
				switch kind {
				case '"':
					s, err := jsontext.AppendUnquote(nil, v)
					if err != nil {
						return invalid(err)
					}
					f.str = string(s)
				case '0':
					f.str = string(v)
				}
				r.fields[full] = f
			}
			if err := r.enc.WriteValue(v); err != nil {
				return invalid(err)
			}
		}
	}
	if prefix == "event" && !r.placed {
		r.placed = true
		if err := r.writeIngested("ingested"); err != nil {
			return err
		}
	}
	if prefix == "" && !r.placed {
		r.placed = true
		if err := r.writeIngested(ingestedPath); err != nil {
			return err
		}
	}
	return r.copyToken() // '}'
}

func (r *rewriter) copyToken() error {
	t, err := r.dec.ReadToken()
	if err != nil {
		return invalid(err)
	}
	if err := r.enc.WriteToken(t); err != nil {
		return invalid(err)
	}
	return nil
}

func (r *rewriter) writeIngested(name string) error {
	if err := r.enc.WriteToken(jsontext.String(name)); err != nil {
		return invalid(err)
	}
	if err := r.enc.WriteToken(jsontext.String(r.ingested)); err != nil {
		return invalid(err)
	}
	return nil
}

func invalid(err error) error {
	return fmt.Errorf("invalid JSON: %s", oneLine(err.Error()))
}
