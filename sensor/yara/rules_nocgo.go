//go:build !cgo

package yara

import "time"

// Enabled reports whether this build has YARA.
const Enabled = false

// Version is empty: no libyara in this build.
func Version() string { return "" }

// Rules is a compiled rule set; a build without cgo has none.
type Rules struct{}

// Len is the number of rules.
func (r *Rules) Len() int { return 0 }

// Warnings are libyara's compile warnings.
func (r *Rules) Warnings() []Problem { return nil }

// Compile returns ErrDisabled.
func Compile([]Source) (*Rules, error) { return nil, ErrDisabled }

// ScanMem returns ErrDisabled.
func (r *Rules) ScanMem([]byte, Externals, time.Duration) ([]Match, error) { return nil, ErrDisabled }

// ScanFile returns ErrDisabled.
func (r *Rules) ScanFile(string, Externals, time.Duration) ([]Match, error) { return nil, ErrDisabled }

// ScanFD returns ErrDisabled.
func (r *Rules) ScanFD(uintptr, Externals, time.Duration) ([]Match, error) { return nil, ErrDisabled }

// ScanProc returns ErrDisabled.
func (r *Rules) ScanProc(int, time.Duration) ([]Match, error) { return nil, ErrDisabled }

// Infos lists no rules.
func (r *Rules) Infos() []Match { return nil }

func compile([]Source) (*Rules, []byte, []includeRead, error) { return nil, nil, nil, ErrDisabled }

func loadRules([]byte, []Problem) (*Rules, error) { return nil, ErrDisabled }
