package spool

// The on-disk record format (see the package comment) and the file helpers
// around it.

import (
	"encoding/binary"
	"hash/crc32"
	"os"

	"github.com/tillwatch/tillwatch/internal/event"
)

const (
	headerLen  = 8     // len + crc
	bodyPrefix = 1 + 8 // kind + seq
	// maxRecord bounds a record's body: a length field beyond it is
	// corruption, not a record.
	maxRecord = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var kinds = []string{event.KindAlert, event.KindEvent, event.KindState}

func kindByte(k string) byte {
	for i, x := range kinds {
		if x == k {
			return byte(i)
		}
	}
	return 0 // unknown kinds travel as alerts: never the first dropped
}

func kindName(b byte) string {
	if int(b) < len(kinds) {
		return kinds[b]
	}
	return event.KindAlert
}

// scan reads the records of a segment; it counts those after acked and
// reports where the valid prefix ends and how many bytes follow it.
func scan(path string, acked int64, each func(seq, end int64)) (pending int, lastSeq, good, bad int64, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	off := int64(0)
	for {
		seq, _, _, next, ok := decode(raw, off)
		if !ok {
			break
		}
		each(seq, next)
		if seq > acked {
			pending++
		}
		lastSeq, off = seq, next
	}
	return pending, lastSeq, off, int64(len(raw)) - off, nil
}

// decode reads the record at off; ok is false at the end or on corruption.
func decode(raw []byte, off int64) (seq int64, kind byte, payload []byte, next int64, ok bool) {
	if int64(len(raw))-off < headerLen {
		return 0, 0, nil, off, false
	}
	n := int64(binary.LittleEndian.Uint32(raw[off:]))
	sum := binary.LittleEndian.Uint32(raw[off+4:])
	if n < bodyPrefix || n > maxRecord || off+headerLen+n > int64(len(raw)) {
		return 0, 0, nil, off, false
	}
	body := raw[off+headerLen : off+headerLen+n]
	if crc32.Checksum(body, castagnoli) != sum {
		return 0, 0, nil, off, false
	}
	return int64(binary.LittleEndian.Uint64(body[1:])), body[0], body[bodyPrefix:], off + headerLen + n, true
}

func encodeRecord(kind string, seq int64, payload []byte) []byte {
	rec := make([]byte, headerLen+bodyPrefix+len(payload))
	body := rec[headerLen:]
	body[0] = kindByte(kind)
	binary.LittleEndian.PutUint64(body[1:], uint64(seq))
	copy(body[bodyPrefix:], payload)
	binary.LittleEndian.PutUint32(rec, uint32(len(body)))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(body, castagnoli))
	return rec
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func readRange(path string, from, to int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, to-from)
	_, err = f.ReadAt(buf, from)
	return buf, err
}
