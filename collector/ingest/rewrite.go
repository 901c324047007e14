package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/go-json-experiment/json/jsontext"
)

// field is one scalar the collector reads from a document, captured while
// the document is checked.
type field struct {
	set  bool
	kind jsontext.Kind // '"' string, '0' number, 't'/'f' bool, 'n' null, '{' object, '[' array
	str  string        // the unquoted string, or the number's literal text
}

// The dotted paths ParseLine reads, as indexes into fields. A document may
// give them nested ({"event":{"id":…}}), dotted ({"event.id":…}) or mixed;
// each must appear once.
const (
	fTimestamp = iota
	fEventID
	fEventKind
	fEventDataset
	fEventSeverity
	fEventSequence
	fHostID
	fRuleID
	fRuleRuleset
	nFields
)

var wanted = map[string]int{
	"@timestamp": fTimestamp, "event.id": fEventID, "event.kind": fEventKind, "event.dataset": fEventDataset,
	"event.severity": fEventSeverity, "event.sequence": fEventSequence, "host.id": fHostID,
	"rule.id": fRuleID, "rule.ruleset": fRuleRuleset,
}

// fieldName is wanted in reverse, for error messages.
var fieldName = func() [nFields]string {
	var n [nFields]string
	for path, i := range wanted {
		n[i] = path
	}
	return n
}()

type fields [nFields]field

// ingestedPath is the field the collector sets on every document.
const ingestedPath = "event.ingested"

// edit replaces line[from:to] with text in the stored document.
type edit struct {
	from, to int
	text     string
}

// rewriter checks documents and rewrites their event.ingested. One per
// batch: its decoder and buffers are reused from line to line.
type rewriter struct {
	dec    jsontext.Decoder
	src    bytes.Buffer
	line   []byte
	fields fields
	edits  []edit
	path   []byte // the dotted path of the member being read
	name   []byte // an unquoted member name with escapes

	ingestedAt time.Time // the batch's event.ingested, and as text
	ingested   string
}

// rewrite checks one JSON object and returns the fields ParseLine reads
// and the document to store: the sent bytes, in their member order and
// with their numbers and spacing as sent, with any event.ingested the
// sender set removed and the collector's written inside the top-level
// "event" object when there is one, else as a dotted top-level member.
// It refuses
//   - duplicate member names at any depth, and a read field given twice in
//     different forms: a document must not tell the collector one host.id
//     and a later reader another;
//   - invalid UTF-8 and anything after the object.
//
// The document is checked by one pass of github.com/go-json-experiment/json's
// tokenizer and stored as edits of the sent bytes: decoding into maps and
// re-encoding with sorted keys was a third of the collector's CPU at full
// ingest (bench/ingestbench), and re-encoding token by token still a third of what
// was left.
func (r *rewriter) rewrite(line []byte) (*fields, []byte, error) {
	r.fields = fields{}
	r.edits = r.edits[:0]
	r.line = line
	r.src = *bytes.NewBuffer(line) // read in place, without a copy
	r.dec.Reset(&r.src)
	if r.dec.PeekKind() != '{' {
		_, err := r.dec.ReadToken()
		if err == nil {
			err = errors.New("not an object")
		}
		return &r.fields, nil, fmt.Errorf("not a JSON object: %s", oneLine(err.Error()))
	}
	if _, err := r.dec.ReadToken(); err != nil {
		return &r.fields, nil, invalid(err)
	}
	start := int(r.dec.InputOffset()) - 1
	kept, eventEnd, eventKept, err := r.members(nil, true)
	if err != nil {
		return &r.fields, nil, err
	}
	end := int(r.dec.InputOffset())
	if _, err := r.dec.ReadToken(); !errors.Is(err, io.EOF) {
		return &r.fields, nil, errors.New("trailing data after the JSON object")
	}
	if eventEnd < 0 { // no "event" object: the document's own closing brace
		eventEnd, eventKept = end-1, kept
	}
	text := `"` + ingestedName(eventEnd == end-1) + `":"` + r.ingested + `"`
	if eventKept > 0 {
		text = "," + text
	}
	r.edits = append(r.edits, edit{from: eventEnd, to: eventEnd, text: text})
	return &r.fields, r.apply(start, end), nil
}

// ingestedName is the collector's field as a member of the document or of
// its "event" object.
func ingestedName(topLevel bool) string {
	if topLevel {
		return ingestedPath
	}
	return "ingested"
}

// members reads the members of the object whose '{' was just read, up to
// and including its '}'. prefix is the object's dotted path; top marks the
// document, the only object whose children are objects read member by
// member (every read path has at most two components). It returns how
// many members it kept, and for the document where the top-level "event"
// object ends and how many of its members are kept (eventEnd -1 when there
// is none).
func (r *rewriter) members(prefix []byte, top bool) (kept, eventEnd, eventKept int, err error) {
	eventEnd = -1
	index := 0
	for ; r.dec.PeekKind() != '}'; index++ {
		before := int(r.dec.InputOffset())
		raw, err := r.dec.ReadValue() // the member name, quoted
		if err != nil {
			return 0, 0, 0, invalid(err)
		}
		name, err := r.unquote(raw)
		if err != nil {
			return 0, 0, 0, invalid(err)
		}
		r.path = append(r.path[:0], prefix...)
		if !top {
			r.path = append(r.path, '.')
		}
		r.path = append(r.path, name...)
		if string(r.path) == ingestedPath { // the collector's own field: the sender's is dropped
			if _, err := r.dec.ReadValue(); err != nil {
				return 0, 0, 0, invalid(err)
			}
			r.drop(before, int(r.dec.InputOffset()), index == 0)
			continue
		}
		kept++
		idx, isWanted := wanted[string(r.path)]
		if isWanted && r.fields[idx].set {
			return 0, 0, 0, fmt.Errorf("%s is given twice", fieldName[idx])
		}
		kind := r.dec.PeekKind()
		if kind == '{' && top && bytes.IndexByte(name, '.') < 0 {
			if isWanted {
				r.fields[idx] = field{set: true, kind: kind}
			}
			if _, err := r.dec.ReadToken(); err != nil {
				return 0, 0, 0, invalid(err)
			}
			// name is r.name or raw; the path outlives both as this copy.
			sub := slices.Clone(r.path)
			subKept, _, _, err := r.members(sub, false)
			if err != nil {
				return 0, 0, 0, err
			}
			if string(sub) == "event" {
				eventEnd, eventKept = int(r.dec.InputOffset())-1, subKept
			}
			continue
		}
		// Anything deeper is read whole; the decoder still refuses
		// duplicate names and invalid UTF-8 inside it.
		v, err := r.dec.ReadValue()
		if err != nil {
			return 0, 0, 0, invalid(err)
		}
		if isWanted {
			f := field{set: true, kind: kind}
			switch kind {
			case '"':
				s, err := jsontext.AppendUnquote(nil, v)
				if err != nil {
					return 0, 0, 0, invalid(err)
				}
				f.str = string(s)
			case '0':
				f.str = string(v)
			}
			r.fields[idx] = f
		}
	}
	if _, err := r.dec.ReadToken(); err != nil { // '}'
		return 0, 0, 0, invalid(err)
	}
	return kept, eventEnd, eventKept, nil
}

// unquote returns a member name without its quotes, unescaping only when
// the name has escapes ("host\u002eid" is host.id to every reader).
func (r *rewriter) unquote(raw jsontext.Value) ([]byte, error) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1], nil
	}
	var err error
	r.name, err = jsontext.AppendUnquote(r.name[:0], raw)
	return r.name, err
}

// drop removes the member line[from:to]. from is where the previous token
// ended, so the span holds the comma before the member; the first member
// has none, and takes the comma after it instead (JSON allows only
// whitespace between a value and its comma).
func (r *rewriter) drop(from, to int, first bool) {
	if first {
		for i := to; i < len(r.line); i++ {
			if c := r.line[i]; c == ',' {
				to = i + 1
				break
			} else if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
				break
			}
		}
	}
	r.edits = append(r.edits, edit{from: from, to: to})
}

// apply returns line[start:end] with the edits made, in a new slice.
func (r *rewriter) apply(start, end int) []byte {
	slices.SortFunc(r.edits, func(a, b edit) int { return a.from - b.from })
	n := end - start
	for _, e := range r.edits {
		n += len(e.text) - (e.to - e.from)
	}
	out := make([]byte, 0, n)
	at := start
	for _, e := range r.edits {
		out = append(out, r.line[at:e.from]...)
		out = append(out, e.text...)
		at = e.to
	}
	return append(out, r.line[at:end]...)
}

func invalid(err error) error {
	return fmt.Errorf("invalid JSON: %s", oneLine(err.Error()))
}
