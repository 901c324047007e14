// Package ransomware scores file behaviour per process tree and turns the
// file guard's verdicts into alerts. Thresholds and weights are data
// (rules/ransomware/*.yaml); everything here is pure: the guard does the I/O
// (sampling content through fanotify's own descriptors) and feeds
// observations in.
package ransomware

import (
	"bytes"
	"compress/flate"
	"io"
	"math"
	"sync"
)

// SampleSize is the size of one sampled block: the head block is enough for
// the format signatures and a stable entropy estimate, small enough to read
// on every open in the watched trees.
const SampleSize = 4096

// SampleBlocks is how many blocks a file larger than one block gives: its
// head, a block in the middle and its last block. Families that encrypt
// only parts of a file (every other block, everything but the header) leave
// the head alone or half alone; the middle and the tail catch them, and
// three bounded reads stay cheap enough for every open.
const SampleBlocks = 3

// Sample reads the blocks of a file of the given size through readAt
// (fanotify's own descriptor in the guard: no path is reopened) and returns
// its features. Short or failed reads just give a shorter sample.
func Sample(readAt func(p []byte, off int64) (int, error), size int64) Features {
	buf := make([]byte, 0, SampleBlocks*SampleSize)
	for _, off := range blockOffsets(size) {
		block := buf[len(buf) : len(buf)+SampleSize]
		n, _ := readAt(block, off)
		if n <= 0 {
			continue
		}
		buf = buf[:len(buf)+n]
	}
	return Extract(buf, size)
}

// blockOffsets are the sampled blocks' offsets: the head, then (for files
// larger than one block) the block-aligned middle and the last full block.
func blockOffsets(size int64) []int64 {
	offs := []int64{0}
	if size <= SampleSize {
		return offs
	}
	tail := max(size-SampleSize, SampleSize) // never re-read the head
	if mid := (size / 2) &^ (SampleSize - 1); mid >= SampleSize && mid+SampleSize <= tail {
		offs = append(offs, mid)
	}
	return append(offs, tail)
}

// Features describe a file's content from a sample of its blocks (the
// signature from the head, entropy and text-ness over every block).
type Features struct {
	Size    int64
	Magic   string  // format recognised from the signature; "" unknown
	Entropy float64 // Shannon entropy of the sampled blocks, bits per byte
	Sampled int     // bytes sampled
}

// signature is a format's magic bytes at an offset.
type signature struct {
	name  string
	off   int
	magic string
}

// signatures are the formats a till holds and the formats benign tools
// write (archives, compressors, databases, executables). An encryptor's
// output matches none of them.
var signatures = []signature{
	{"pdf", 0, "%PDF-"}, {"zip", 0, "PK\x03\x04"}, {"zip", 0, "PK\x05\x06"}, {"gzip", 0, "\x1f\x8b"},
	{"png", 0, "\x89PNG\r\n\x1a\n"}, {"jpeg", 0, "\xff\xd8\xff"}, {"gif", 0, "GIF8"},
	{"sqlite", 0, "SQLite format 3\x00"}, {"elf", 0, "\x7fELF"}, {"xz", 0, "\xfd7zXZ\x00"},
	{"bzip2", 0, "BZh"}, {"zstd", 0, "\x28\xb5\x2f\xfd"}, {"7z", 0, "7z\xbc\xaf\x27\x1c"},
	{"ole2", 0, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"}, {"rtf", 0, "{\\rtf"}, {"tar", 257, "ustar"},
	{"mp3", 0, "ID3"}, {"mp4", 4, "ftyp"}, {"bmp", 0, "BM"}, {"tiff", 0, "II*\x00"}, {"tiff", 0, "MM\x00*"},
	{"rar", 0, "Rar!\x1a\x07"}, {"lz4", 0, "\x04\x22\x4d\x18"}, {"pgdump", 0, "PGDMP"}, {"webp", 8, "WEBP"},
}

// Extract computes the features of a sample of a file of the given size.
func Extract(sample []byte, size int64) Features {
	f := Features{Size: size, Sampled: len(sample), Entropy: Entropy(sample)}
	for _, s := range signatures {
		if len(sample) >= s.off+len(s.magic) && string(sample[s.off:s.off+len(s.magic)]) == s.magic {
			if s.name == "gzip" && !inflates(gzipBody(sample)) {
				break // two magic bytes in front of random ones: not gzip
			}
			f.Magic = s.name
			return f
		}
	}
	if isZlib(sample) {
		f.Magic = "zlib" // git objects, PNG-less deflate streams
		return f
	}
	if isText(sample) {
		f.Magic = "text"
	}
	return f
}

// Entropy is the Shannon entropy of b in bits per byte (0..8).
func Entropy(b []byte) float64 {
	if len(b) == 0 {
		return 0
	}
	var counts [256]int
	for _, c := range b {
		counts[c]++
	}
	n := float64(len(b))
	var h float64
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// isText reports whether b looks like UTF-8 or ASCII text (CSV, logs,
// source, configuration): no NULs and almost only printable bytes.
func isText(b []byte) bool {
	if len(b) == 0 || bytes.IndexByte(b, 0) >= 0 {
		return false
	}
	bad := 0
	for _, c := range b {
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' && c != '\f' {
			bad++
		}
	}
	return bad*100 < len(b)
}

// isZlib recognises a zlib stream (RFC 1950), as git writes every loose
// object: a two-byte header whose check bits hold (CMF*256+FLG divisible by
// 31, deflate, no preset dictionary) followed by deflate data that really
// inflates. The header alone is 2 bytes an encryptor could prepend; random
// bytes behind it fail to inflate within a few hundred bytes.
func isZlib(sample []byte) bool {
	if len(sample) < 2 || sample[0]&0x0f != 8 || sample[0]>>4 > 7 || sample[1]&0x20 != 0 ||
		(int(sample[0])<<8|int(sample[1]))%31 != 0 {
		return false
	}
	return inflates(sample[2:])
}

// gzipBody returns the deflate data behind a gzip member header (RFC 1952),
// nil when the header is malformed or longer than the sample.
func gzipBody(sample []byte) []byte {
	if len(sample) < 10 || sample[2] != 8 {
		return nil
	}
	flg, p := sample[3], 10
	if flg&0x04 != 0 { // FEXTRA
		if len(sample) < p+2 {
			return nil
		}
		p += 2 + int(sample[p]) | int(sample[p+1])<<8
	}
	for _, bit := range []byte{0x08, 0x10} { // FNAME, FCOMMENT: zero-terminated
		if flg&bit != 0 {
			if p > len(sample) {
				return nil
			}
			i := bytes.IndexByte(sample[p:], 0)
			if i < 0 {
				return nil
			}
			p += i + 1
		}
	}
	if flg&0x02 != 0 { // FHCRC
		p += 2
	}
	if p > len(sample) {
		return nil
	}
	return sample[p:]
}

// inflateProbe is how much a deflate stream must yield (or end cleanly
// before) to count as one.
const inflateProbe = 512

// inflaters keeps decompressors for inflates: a new one allocates its 32 KiB
// window, which under a file storm (every compressed file written is
// probed) was a third of the probe's cost.
var inflaters = sync.Pool{New: func() any {
	r := &inflater{}
	r.dec = flate.NewReader(&r.src)
	return r
}}

type inflater struct {
	src bytes.Reader
	dec io.ReadCloser
	out [inflateProbe]byte
}

// inflates reports whether data starts a valid deflate stream: it yields
// inflateProbe bytes, or ends cleanly (a small file), or runs out of
// sample (only the head block is contiguous) after yielding some.
func inflates(data []byte) bool {
	if len(data) == 0 {
		return false
	}
	head := data[:min(len(data), SampleSize)]
	r := inflaters.Get().(*inflater)
	defer inflaters.Put(r)
	r.src.Reset(head)
	if err := r.dec.(flate.Resetter).Reset(&r.src, nil); err != nil {
		return false
	}
	n, err := io.ReadFull(r.dec, r.out[:])
	switch {
	case n == inflateProbe:
		return true
	case err == io.ErrUnexpectedEOF || err == io.EOF:
		// Ended before the probe: a small complete stream is fine; a
		// stream cut by the end of the head block is fine only if it
		// yielded a fair amount for the bytes it consumed.
		return n > 0 && (len(head) < SampleSize || n >= len(head)/4)
	default:
		return false
	}
}
