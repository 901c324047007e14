// Package ndjson is the --alerts-out sink: every event it receives appended
// as one ECS JSON object per line to a file, or to stdout for "-".
package ndjson

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/tillwatch/tillwatch/internal/event"
)

// Sink implements pipeline.Sink.
type Sink struct {
	mu   sync.Mutex
	w    *bufio.Writer
	c    io.Closer // nil for stdout
	path string
}

// Open opens path for appending (created 0600: alerts name processes and
// files an operator may not want world-readable). "-" writes to stdout.
func Open(path string) (*Sink, error) {
	if path == "-" {
		return &Sink{w: bufio.NewWriter(os.Stdout), path: path}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("alerts-out: %w", err)
	}
	return &Sink{w: bufio.NewWriter(f), c: f, path: path}, nil
}

// Name implements pipeline.Sink.
func (s *Sink) Name() string { return "alerts-out" }

// Write implements pipeline.Sink. Each line is flushed at once: a reader
// tailing the file (or a test) sees the alert when it is raised.
func (s *Sink) Write(_ context.Context, ev *event.Event) error {
	line, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event %s: %w", ev.Event.ID, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.w.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", s.path, err)
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", s.path, err)
	}
	return nil
}

// Close implements pipeline.Sink.
func (s *Sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.w.Flush()
	if s.c != nil {
		if cerr := s.c.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
