package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
)

// recover loads the ack cursor and scans every segment.
func (s *Spool) recover() error {
	if raw, err := os.ReadFile(filepath.Join(s.o.Dir, "ack")); err == nil {
		s.acked, _ = strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(s.o.Dir, "*.seg"))
	if err != nil {
		return err
	}
	type named struct {
		path  string
		first int64
	}
	var found []named
	for _, n := range names {
		first, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(n), ".seg"), 10, 64)
		if err != nil {
			s.o.Log.Warn("spool: ignoring a file that is not a segment", logkey.Path, n)
			continue
		}
		found = append(found, named{n, first})
	}
	sort.Slice(found, func(i, j int) bool { return found[i].first < found[j].first })

	maxSeq := s.acked
	s.ackPos = pos{seg: -1}
	for i, f := range found {
		seg := &segment{path: f.path, first: f.first}
		last := i == len(found)-1
		n, lastSeq, good, bad, err := scan(f.path, s.acked, func(seq int64, end int64) {
			if seq <= s.acked {
				// Everything up to here was confirmed before the crash.
				s.ackPos = pos{seg: i, off: end}
			}
		})
		if err != nil {
			return fmt.Errorf("spool: read %s: %w", f.path, err)
		}
		seg.size = good
		if bad > 0 {
			what := "corrupt records in the middle of the spool; the rest of this segment is lost"
			if last {
				what = "torn tail (a write cut short by a crash or power loss)"
			}
			reason := fmt.Sprintf("%s: %d bytes skipped in %s", what, bad, filepath.Base(f.path))
			s.o.Log.Warn("spool recovery", logkey.Reason, reason)
			s.o.Health(Component, event.HealthDegraded, reason)
			if err := os.Truncate(f.path, good); err != nil {
				return fmt.Errorf("spool: cut torn tail of %s: %w", f.path, err)
			}
		}
		s.pending += n
		if lastSeq > maxSeq {
			maxSeq = lastSeq
		}
		s.segs = append(s.segs, seg)
		s.total += good
	}
	s.nextSeq = maxSeq + 1
	if s.ackPos.seg < 0 {
		s.ackPos = pos{seg: 0, off: 0}
	}
	ackF, err := os.OpenFile(filepath.Join(s.o.Dir, "ack"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.ackF = ackF
	// Drop segments wholly before the ack position (a crash between the ack
	// and the delete).
	s.compact()
	if len(s.segs) == 0 {
		return s.rotate()
	}
	w, err := os.OpenFile(s.segs[len(s.segs)-1].path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.w = w
	return nil
}
