//go:build cgo

package yara

/*
#include <stdlib.h>
#include <string.h>
#include <yara.h>

// tw_mem is a read-only stream over a buffer, for yr_rules_load_stream.
typedef struct { const char* p; size_t n; size_t off; } tw_mem;

static size_t tw_mem_read(void* dst, size_t size, size_t count, void* user) {
	tw_mem* m = user;
	size_t want = size * count;
	if (size == 0 || m->n - m->off < want) return 0;
	memcpy(dst, m->p + m->off, want);
	m->off += want;
	return count;
}

static int tw_rules_load(const char* p, size_t n, YR_RULES** out) {
	tw_mem m = { p, n, 0 };
	YR_STREAM s = { .user_data = &m, .read = tw_mem_read };
	return yr_rules_load_stream(&s, out);
}

static const char* tw_rule_identifier(YR_RULES* r, int i) { return r->rules_table[i].identifier; }

// tw_job is one open file of a batch: its descriptor, its five externals
// (offsets into the batch's string buffer) and, after the scan, libyara's
// result and where its matches are in the batch's match array.
typedef struct {
	int fd;
	int ext[5];
	int result;
	int first;
	int count;
	int overflow;
} tw_job;

typedef struct {
	YR_RULES* rules;
	int* idx;
	int cap;
	int n;
	int overflow;
} tw_matches;

// tw_callback records the index of each matching rule: no call back into
// Go while libyara scans.
static int tw_callback(YR_SCAN_CONTEXT* ctx, int msg, void* data, void* user) {
	if (msg != CALLBACK_MSG_RULE_MATCHING) return CALLBACK_CONTINUE;
	tw_matches* m = user;
	if (m->n < m->cap) {
		m->idx[m->n++] = (int)((YR_RULE*)data - m->rules->rules_table);
	} else {
		m->overflow = 1;
	}
	return CALLBACK_CONTINUE;
}

static const char* tw_ext_names[5] = { "filename", "filepath", "extension", "filetype", "owner" };

// tw_scan_batch scans every job's descriptor with one scanner, in one call
// from Go.
static void tw_scan_batch(YR_SCANNER* s, YR_RULES* rules, tw_job* jobs, int n, const char* strs, int* idx, int cap) {
	tw_matches m = { rules, idx, cap, 0, 0 };
	yr_scanner_set_callback(s, tw_callback, &m);
	for (int i = 0; i < n; i++) {
		tw_job* j = &jobs[i];
		j->result = ERROR_SUCCESS;
		for (int k = 0; k < 5 && j->result == ERROR_SUCCESS; k++) {
			j->result = yr_scanner_define_string_variable(s, tw_ext_names[k], strs + j->ext[k]);
		}
		j->first = m.n;
		m.overflow = 0;
		if (j->result == ERROR_SUCCESS) {
			j->result = yr_scanner_scan_fd(s, j->fd);
		}
		j->count = m.n - j->first;
		j->overflow = m.overflow;
	}
}
*/
import "C"

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"

	goyara "github.com/hillu/go-yara/v4"
)

// batchRules is a second, C-side copy of a rule set for sweeps: files are
// scanned in batches, one cgo call per batch, matches recorded in C as
// rule indexes. A cgo call per file (and libyara's callbacks into Go for
// every module import and the scan's end) kept Go's scheduler handing the
// processor between threads on every file: measured as about a quarter
// more CPU than the yara CLI on the same files (docs/benchmarks.md, YARA).
type batchRules struct {
	c     *C.YR_RULES
	infos []Match // by rule index
}

// batchMatchCap bounds the matches recorded per batch; a file whose
// matches did not fit is scanned again on its own.
const batchMatchCap = 4096

// newBatchRules loads r again from its serialisation. It fails when the
// copy's rule order differs from r's (then the caller scans file by file).
func newBatchRules(r *Rules) (*batchRules, error) {
	var buf bytes.Buffer
	if err := r.r.Write(&buf); err != nil {
		return nil, fmt.Errorf("yara: save rules: %w", err)
	}
	p := C.CBytes(buf.Bytes())
	defer C.free(p)
	var c *C.YR_RULES
	if rc := C.tw_rules_load((*C.char)(p), C.size_t(buf.Len()), &c); rc != C.ERROR_SUCCESS {
		return nil, fmt.Errorf("yara: load rules: %w", goyara.Error(rc))
	}
	b := &batchRules{c: c, infos: r.Infos()}
	for i, m := range b.infos {
		if C.GoString(C.tw_rule_identifier(c, C.int(i))) != m.Rule {
			b.free()
			return nil, errors.New("yara: rule order differs after loading")
		}
	}
	return b, nil
}

func (b *batchRules) free() {
	if b.c != nil {
		C.yr_rules_destroy(b.c)
		b.c = nil
	}
}

// batchScanner is one worker's libyara scanner over b.
type batchScanner struct {
	b    *batchRules
	s    *C.YR_SCANNER
	jobs []C.tw_job
	strs []byte
	idx  []C.int
}

func (b *batchRules) scanner(timeout time.Duration) (*batchScanner, error) {
	var s *C.YR_SCANNER
	if rc := C.yr_scanner_create(b.c, &s); rc != C.ERROR_SUCCESS {
		return nil, fmt.Errorf("yara scanner: %w", goyara.Error(rc))
	}
	C.yr_scanner_set_timeout(s, C.int(timeout/time.Second))
	C.yr_scanner_set_flags(s, C.SCAN_FLAGS_REPORT_RULES_MATCHING)
	return &batchScanner{b: b, s: s, idx: make([]C.int, batchMatchCap)}, nil
}

func (bs *batchScanner) close() {
	C.yr_scanner_destroy(bs.s)
}

// batchFile is one file of a batch: its open descriptor and externals in,
// matches and error out; Retry is set when its matches did not fit.
type batchFile struct {
	FD      int
	X       Externals
	Matches []Match
	Err     error
	Retry   bool
}

// scan scans every file of fs in one cgo call.
func (bs *batchScanner) scan(fs []batchFile) {
	bs.jobs = bs.jobs[:0]
	bs.strs = bs.strs[:0]
	add := func(s string) C.int {
		off := len(bs.strs)
		if i := strings.IndexByte(s, 0); i >= 0 {
			s = s[:i] // a C string ends at the first NUL
		}
		bs.strs = append(append(bs.strs, s...), 0)
		return C.int(off)
	}
	for _, f := range fs {
		var j C.tw_job
		j.fd = C.int(f.FD)
		for k, v := range [5]string{f.X.Filename, f.X.Filepath, f.X.Extension, f.X.Filetype, f.X.Owner} {
			j.ext[k] = add(v)
		}
		bs.jobs = append(bs.jobs, j)
	}
	if len(bs.jobs) == 0 {
		return
	}
	C.tw_scan_batch(bs.s, bs.b.c, &bs.jobs[0], C.int(len(bs.jobs)), (*C.char)(unsafe.Pointer(&bs.strs[0])), &bs.idx[0], C.int(len(bs.idx)))
	for i := range fs {
		j := &bs.jobs[i]
		if j.result != C.ERROR_SUCCESS {
			fs[i].Err = classify(goyara.Error(j.result))
		}
		if j.overflow != 0 {
			fs[i].Retry = true
			continue
		}
		for _, k := range bs.idx[j.first : j.first+j.count] {
			fs[i].Matches = append(fs[i].Matches, bs.b.infos[k])
		}
	}
}
