// Package ingest turns an NDJSON batch from a sensor into documents ready to
// store: it bounds what it reads, validates each line on its own, and reports
// bad lines by number so the rest of the batch is still kept.
package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/event"
)

// Batch-level failures; the server maps them to status codes.
var (
	ErrTooLarge      = fmt.Errorf("batch larger than %d bytes", api.MaxBatchBytes)
	ErrTooManyEvents = fmt.Errorf("batch has more than %d events", api.MaxBatchEvents)
	ErrEmpty         = errors.New("empty batch")
)

// maxIDLen bounds identifiers used as keys and filters.
const maxIDLen = 256

// kinds are the ECS event.kind values.
var kinds = []string{event.KindAlert, event.KindEvent, event.KindState, "metric", "enrichment", "signal", "pipeline_error"}

// Result is a parsed batch.
type Result struct {
	Docs     []store.Doc
	Rejected []api.Rejection
}

// ParseBatch reads NDJSON from r, which must already be limited to
// api.MaxBatchBytes+1 decoded bytes (reading more than MaxBatchBytes fails
// with ErrTooLarge). Every non-blank line is one event for hostID; line
// numbers count from 1 and include blank lines. Lines longer than
// api.MaxEventBytes are rejected without being held in memory.
func ParseBatch(r io.Reader, hostID string, now time.Time) (Result, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		rw    rewriter
		res   Result
		total int
		lines int
		seen  int
		buf   []byte
	)
	for {
		line, tooLong, n, err := readLine(br, &buf)
		total += n
		if total > api.MaxBatchBytes {
			return Result{}, ErrTooLarge
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return Result{}, err
		}
		if n > 0 || !errors.Is(err, io.EOF) {
			lines++
		}
		switch {
		case tooLong:
			seen++
			res.Rejected = append(res.Rejected, api.Rejection{Line: lines,
				Error: fmt.Sprintf("event larger than %d bytes", api.MaxEventBytes)})
		case len(bytes.TrimSpace(line)) > 0:
			seen++
			doc, err := rw.parseLine(line, hostID, now)
			if err != nil {
				res.Rejected = append(res.Rejected, api.Rejection{Line: lines, EventID: doc.EventID, Error: err.Error()})
			} else {
				res.Docs = append(res.Docs, doc)
			}
		}
		if seen > api.MaxBatchEvents {
			return Result{}, ErrTooManyEvents
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	if seen == 0 {
		return Result{}, ErrEmpty
	}
	return res, nil
}

// readLine reads one line without its newline into *buf. A line beyond
// api.MaxEventBytes is consumed and dropped (tooLong). n is the number of
// bytes consumed, newline included.
func readLine(br *bufio.Reader, buf *[]byte) (line []byte, tooLong bool, n int, err error) {
	*buf = (*buf)[:0]
	for {
		chunk, err := br.ReadSlice('\n')
		n += len(chunk)
		if !tooLong {
			if len(*buf)+len(chunk) > api.MaxEventBytes+1 { // +1: the newline
				tooLong = true
				*buf = (*buf)[:0]
			} else {
				*buf = append(*buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if n > api.MaxBatchBytes {
				return nil, tooLong, n, nil // caller reports ErrTooLarge
			}
			continue
		}
		line = bytes.TrimSuffix(*buf, []byte("\n"))
		if len(line) > api.MaxEventBytes {
			return nil, true, n, err
		}
		return line, tooLong, n, err
	}
}

// ParseLine validates one NDJSON line as an ECS document from hostID and
// returns it ready to store, with event.ingested set to now. On error the
// returned Doc carries EventID when one could be read, for the rejection.
func ParseLine(line []byte, hostID string, now time.Time) (store.Doc, error) {
	var r rewriter
	return r.parseLine(line, hostID, now)
}

// parseLine is ParseLine with the buffers of a batch.
func (r *rewriter) parseLine(line []byte, hostID string, now time.Time) (store.Doc, error) {
	var doc store.Doc
	doc.Ingested = now.UTC()
	if r.ingested == "" || !r.ingestedAt.Equal(doc.Ingested) {
		r.ingestedAt, r.ingested = doc.Ingested, doc.Ingested.Format(time.RFC3339Nano)
	}
	fields, out, err := r.rewrite(line)
	if f := fields[fEventID]; f.set && f.kind == '"' && validID(f.str) {
		doc.EventID = f.str // for the rejection, even when the line is refused
	}
	if err != nil {
		return doc, err
	}
	doc.EventID = ""

	var errs []string
	str := func(i int) string {
		f := fields[i]
		if !f.set {
			errs = append(errs, fieldName[i]+" is required")
			return ""
		}
		if f.kind != '"' || f.str == "" {
			errs = append(errs, fieldName[i]+" must be a non-empty string")
			return ""
		}
		return f.str
	}
	doc.EventID = str(fEventID)
	if doc.EventID != "" && !validID(doc.EventID) {
		errs = append(errs, fmt.Sprintf("event.id must be printable and at most %d bytes", maxIDLen))
		doc.EventID = ""
	}
	doc.Kind = str(fEventKind)
	if doc.Kind != "" && !slices.Contains(kinds, doc.Kind) {
		errs = append(errs, fmt.Sprintf("event.kind %q is not an ECS kind", truncate(doc.Kind)))
	}
	if ts := str(fTimestamp); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			errs = append(errs, "@timestamp must be RFC 3339")
		}
		doc.Timestamp = t
	}
	doc.HostID = str(fHostID)
	if doc.HostID != "" && doc.HostID != hostID {
		errs = append(errs, fmt.Sprintf("host.id %q does not match the credential's host", truncate(doc.HostID)))
	}
	if f := fields[fEventDataset]; f.set && f.kind == '"' {
		doc.Dataset = f.str
	}
	if f := fields[fEventSeverity]; f.set && f.kind == '0' {
		if i, err := strconv.ParseInt(f.str, 10, 64); err == nil && i >= 0 && i <= 100 {
			doc.Severity = int(i)
		}
	}
	if f := fields[fEventSequence]; f.set {
		i, err := strconv.ParseInt(f.str, 10, 64)
		if f.kind != '0' || err != nil || i < 0 {
			errs = append(errs, "event.sequence must be a non-negative integer")
		} else {
			doc.Sequence = i
		}
	}
	if doc.Kind == event.KindAlert {
		doc.RuleID = str(fRuleID)
		if doc.RuleID != "" && !validID(doc.RuleID) {
			errs = append(errs, fmt.Sprintf("rule.id must be printable and at most %d bytes", maxIDLen))
		}
		doc.Ruleset = str(fRuleRuleset)
		if doc.Ruleset != "" && !slices.Contains(event.Rulesets, doc.Ruleset) {
			errs = append(errs, "rule.ruleset must be one of "+strings.Join(event.Rulesets, ", "))
		}
	}
	if len(errs) > 0 {
		return doc, errors.New(strings.Join(errs, "; "))
	}
	doc.JSON = out
	return doc, nil
}

func validID(s string) bool {
	if len(s) > maxIDLen {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// truncate keeps rejection messages short when a value is hostile.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
