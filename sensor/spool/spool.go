// Package spool is the sensor's durable queue: every alert and event the
// sensor ships is written here, in order and with its sequence number,
// before it is reported anywhere, and removed only after the collector
// confirmed it. It implements shipper.Queue.
//
// Layout: DIR/<first-seq>.seg segment files of records, DIR/ack holding the
// last acknowledged sequence number. A record is
//
//	len uint32 | crc32c(body) uint32 | body = kind byte | seq uint64 | payload
//
// (little endian). The checksum finds a torn or corrupt tail after power
// loss; recovery truncates it and reports it as a health event.
//
// Durability: alerts and health events are fsynced before Append returns;
// telemetry is fsynced at most SyncEvery later (group commit), so a power
// loss can cost the last moment of telemetry, never an acknowledged alert.
package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/logkey"
	"github.com/tillwatch/tillwatch/sensor/shipper"
)

// Options configure a Spool. Zero values take the defaults noted.
type Options struct {
	Dir string
	// MaxBytes bounds the segments on disk for telemetry (default 256 MiB).
	MaxBytes int64
	// AlertReserve is extra room only alerts and health events may use once
	// telemetry is refused (default MaxBytes/4).
	AlertReserve int64
	// SegmentBytes is the size at which a new segment starts (default 4 MiB).
	SegmentBytes int64
	// SyncEvery bounds how long telemetry may sit unsynced (default 1s).
	SyncEvery time.Duration
	// MemoryFallback is how many alerts are held in memory while the disk
	// refuses writes (full, read-only), so they still reach the collector
	// (default 10000).
	MemoryFallback int
	// Health receives degradations (torn tail, disk full, drops).
	Health event.HealthFunc
	Log    *slog.Logger
}

// Component is the health component name of the spool.
const Component = "spool"

// segment is one file of records.
type segment struct {
	path  string
	first int64 // sequence in the name
	size  int64 // valid bytes
}

// pos is a place in the spool: a segment and an offset in it.
type pos struct {
	seg int
	off int64
}

type memRecord struct {
	seq  int64
	kind string
	line []byte
}

// Spool implements shipper.Queue on disk.
type Spool struct {
	o Options

	mu       sync.Mutex
	segs     []*segment
	w        *os.File // the last segment, open for append
	total    int64    // bytes in all segments
	nextSeq  int64
	acked    int64 // last acknowledged sequence
	ackPos   pos   // first byte after the last acknowledged record
	pending  int   // records on disk after ackPos
	inflight *flight
	unsynced bool
	lastSync time.Time
	mem      []memRecord // alerts the disk refused, in order, after the disk records
	dropped  map[string]uint64
	ready    chan struct{}
	closed   bool
	stop     chan struct{}
	// dirty tells syncLoop that telemetry waits unsynced.
	dirty chan struct{}
	ackF  *os.File // DIR/ack, rewritten in place
}

type flight struct {
	last  int64 // sequence of the batch's last record
	end   pos
	count int
	mem   bool
}

var _ shipper.Queue = (*Spool)(nil)

// Open opens or creates the spool in o.Dir, recovering from a crash: torn
// or corrupt records are cut off and reported, acknowledged records are not
// sent again, sequence numbers continue where they stopped.
func Open(o Options) (*Spool, error) {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 256 << 20
	}
	if o.AlertReserve <= 0 {
		o.AlertReserve = o.MaxBytes / 4
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 4 << 20
	}
	if o.SyncEvery <= 0 {
		o.SyncEvery = time.Second
	}
	if o.MemoryFallback <= 0 {
		o.MemoryFallback = 10000
	}
	if o.Health == nil {
		o.Health = event.NoHealth
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{o: o, dropped: map[string]uint64{}, ready: make(chan struct{}, 1), lastSync: time.Now(), stop: make(chan struct{}), dirty: make(chan struct{}, 1)}
	if err := s.recover(); err != nil {
		return nil, err
	}
	go s.syncLoop()
	return s, nil
}

// syncLoop makes the telemetry fsync bound hold when no further write
// comes: SyncEvery after a write left telemetry unsynced, it syncs. With
// nothing unsynced it sleeps (no timer on an idle sensor).
func (s *Spool) syncLoop() {
	for {
		select {
		case <-s.stop:
			return
		case <-s.dirty:
		}
		t := time.NewTimer(s.o.SyncEvery)
		select {
		case <-s.stop:
			t.Stop()
			return
		case <-t.C:
		}
		s.mu.Lock()
		if s.unsynced && s.w != nil {
			if err := s.w.Sync(); err == nil {
				s.unsynced, s.lastSync = false, time.Now()
			}
		}
		s.mu.Unlock()
	}
}

// rotate closes the write segment and starts a new one named after the
// next sequence number.
func (s *Spool) rotate() error {
	if s.w != nil {
		if err := s.w.Sync(); err != nil {
			return err
		}
		if err := s.w.Close(); err != nil {
			return err
		}
		s.w = nil
	}
	path := filepath.Join(s.o.Dir, fmt.Sprintf("%020d.seg", s.nextSeq))
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.w = w
	s.segs = append(s.segs, &segment{path: path, first: s.nextSeq})
	return syncDir(s.o.Dir)
}

// Append implements shipper.Queue.
func (s *Spool) Append(kind string, encode func(seq int64) ([]byte, error)) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errors.New("spool closed")
	}
	seq := s.nextSeq
	line, err := encode(seq)
	if err != nil {
		return 0, err
	}
	rec := encodeRecord(kind, seq, line)
	size := int64(len(rec))
	limit := s.o.MaxBytes
	if kind != event.KindEvent {
		limit += s.o.AlertReserve
	}
	switch {
	case len(s.mem) > 0:
		// The disk refused earlier records; later ones follow them in
		// memory so the order (and the sequence) stays intact.
		err = errMemoryMode
	case s.total+size > limit:
		s.dropped[kind]++
		reason := fmt.Sprintf("spool full (%d bytes): %s events dropped (%d so far); the collector has been unreachable for long", s.total, kind, s.dropped[kind])
		state := event.HealthDegraded
		if kind != event.KindEvent {
			state = event.HealthFailed
		}
		go s.o.Health(Component, state, reason)
		return 0, fmt.Errorf("%w: %s", shipper.ErrFull, reason)
	default:
		err = s.write(rec, kind)
	}
	if err != nil {
		if kind == event.KindEvent || len(s.mem) >= s.o.MemoryFallback {
			s.dropped[kind]++
			return 0, fmt.Errorf("spool: %w", err)
		}
		if !errors.Is(err, errMemoryMode) {
			go s.o.Health(Component, event.HealthDegraded, "cannot write the spool ("+err.Error()+"); alerts held in memory until it can")
		}
		s.mem = append(s.mem, memRecord{seq: seq, kind: kind, line: line})
	}
	s.nextSeq++
	select {
	case s.ready <- struct{}{}:
	default:
	}
	return seq, nil
}

var errMemoryMode = errors.New("spool in memory mode")

// write appends rec to the write segment, syncing per the policy. On error
// it cuts the partial record off again.
func (s *Spool) write(rec []byte, kind string) error {
	last := s.segs[len(s.segs)-1]
	if last.size > 0 && last.size+int64(len(rec)) > s.o.SegmentBytes {
		if err := s.rotate(); err != nil {
			return err
		}
		last = s.segs[len(s.segs)-1]
	}
	if _, err := s.w.Write(rec); err != nil {
		_ = s.w.Truncate(last.size)
		return err
	}
	if kind != event.KindEvent || time.Since(s.lastSync) >= s.o.SyncEvery {
		if err := s.w.Sync(); err != nil {
			_ = s.w.Truncate(last.size)
			return err
		}
		s.unsynced, s.lastSync = false, time.Now()
	} else {
		s.unsynced = true
		select {
		case s.dirty <- struct{}{}:
		default: // syncLoop has been told already
		}
	}
	last.size += int64(len(rec))
	s.total += int64(len(rec))
	s.pending++
	return nil
}

// Peek implements shipper.Queue. It always starts at the oldest
// unacknowledged record: a batch that was not acknowledged is sent again.
func (s *Spool) Peek(maxEvents, maxBytes int) (shipper.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight = nil
	if s.pending == 0 {
		if len(s.mem) == 0 {
			return shipper.Batch{}, nil
		}
		f := &flight{mem: true}
		var b shipper.Batch
		size := 0
		for _, r := range s.mem {
			if len(b.Lines) >= maxEvents || (len(b.Lines) > 0 && size+len(r.line) > maxBytes) {
				break
			}
			b.Lines = append(b.Lines, r.line)
			size += len(r.line) + 1
			f.last, f.count = r.seq, f.count+1
		}
		b.Token = uint64(f.last)
		s.inflight = f
		return b, nil
	}
	f := &flight{end: s.ackPos}
	var b shipper.Batch
	size := 0
	p := s.ackPos
	for p.seg < len(s.segs) && len(b.Lines) < maxEvents {
		seg := s.segs[p.seg]
		if p.off >= seg.size {
			if p.seg == len(s.segs)-1 {
				break
			}
			p = pos{seg: p.seg + 1}
			continue
		}
		raw, err := readRange(seg.path, p.off, seg.size)
		if err != nil {
			return shipper.Batch{}, fmt.Errorf("spool: read %s: %w", seg.path, err)
		}
		off := int64(0)
		for len(b.Lines) < maxEvents {
			seq, _, payload, next, ok := decode(raw, off)
			if !ok {
				break
			}
			if len(b.Lines) > 0 && size+len(payload) > maxBytes {
				maxEvents = len(b.Lines) // batch full
				break
			}
			b.Lines = append(b.Lines, payload)
			size += len(payload) + 1
			f.last, f.count = seq, f.count+1
			off = next
		}
		p = pos{seg: p.seg, off: p.off + off}
		f.end = p
		if off == 0 {
			break // nothing readable here (cannot happen after recovery)
		}
	}
	b.Token = uint64(f.last)
	s.inflight = f
	return b, nil
}

// Ack implements shipper.Queue: it persists the new ack cursor, then
// deletes segments that hold nothing unacknowledged.
func (s *Spool) Ack(b shipper.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.inflight
	if f == nil || uint64(f.last) != b.Token || f.count != len(b.Lines) {
		return errors.New("spool: ack of a batch that is not the one in flight")
	}
	s.inflight = nil
	if f.mem {
		s.mem = s.mem[f.count:]
		if len(s.mem) == 0 {
			s.mem = nil
		}
	} else {
		s.ackPos = f.end
		s.pending -= f.count
	}
	s.acked = f.last
	s.compact()
	// The cursor is rewritten in place at a fixed width, so it needs no new
	// blocks on a full disk. If it still cannot be kept, the sensor goes on:
	// after a crash it would resend what the collector already has, and the
	// collector deduplicates by event.id.
	if err := s.persistAck(); err != nil {
		s.o.Log.Warn("spool: cannot persist the ack cursor; a crash now would resend confirmed events", logkey.Error, err)
		go s.o.Health(Component, event.HealthDegraded, "cannot persist the spool's ack cursor: "+err.Error())
	}
	return nil
}

func (s *Spool) persistAck() error {
	if _, err := s.ackF.WriteAt([]byte(fmt.Sprintf("%020d\n", s.acked)), 0); err != nil {
		return err
	}
	return s.ackF.Sync()
}

// compact deletes segments entirely before the ack position, never the
// write segment.
func (s *Spool) compact() {
	for len(s.segs) > 1 && s.ackPos.seg > 0 {
		old := s.segs[0]
		if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.o.Log.Warn("spool: cannot remove a sent segment", logkey.Path, old.path, logkey.Error, err)
			return
		}
		s.total -= old.size
		s.segs = s.segs[1:]
		s.ackPos.seg--
		if s.inflight != nil && !s.inflight.mem {
			s.inflight.end.seg--
		}
	}
}

// Len implements shipper.Queue.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending + len(s.mem)
}

// Dropped reports events refused, per event.kind.
func (s *Spool) Dropped() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.dropped))
	for k, v := range s.dropped {
		out[k] = v
	}
	return out
}

// Ready implements shipper.Queue.
func (s *Spool) Ready() <-chan struct{} { return s.ready }

// Close syncs and closes the spool. Records held in memory because the disk
// refused them are lost with the process; they were reported when it began.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.stop)
	if s.ackF != nil {
		s.ackF.Close()
	}
	if s.w == nil {
		return nil
	}
	err := s.w.Sync()
	if cerr := s.w.Close(); err == nil {
		err = cerr
	}
	return err
}
