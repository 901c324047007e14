//go:build !cgo

package yara

import "time"

// batchRules needs libyara.
type batchRules struct{}

func newBatchRules(*Rules) (*batchRules, error) { return nil, ErrDisabled }

func (b *batchRules) free() {}

type batchScanner struct{}

func (b *batchRules) scanner(time.Duration) (*batchScanner, error) { return nil, ErrDisabled }

func (bs *batchScanner) close() {}

type batchFile struct {
	FD      int
	X       Externals
	Matches []Match
	Err     error
	Retry   bool
}

func (bs *batchScanner) scan([]batchFile) {}
