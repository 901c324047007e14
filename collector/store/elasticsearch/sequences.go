package elasticsearch

// Event sequence tracking (store.SequenceTracker).

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tillwatch/tillwatch/collector/store"
)

// TrackSequences implements store.SequenceTracker.
func (s *Store) TrackSequences(ctx context.Context, hostID string, seqs []int64) ([]store.SequenceGap, error) {
	if !slices.ContainsFunc(seqs, func(q int64) bool { return q > 0 }) {
		return nil, nil // not sequenced (an older sensor): Ingest wrote last_seen
	}
	var gaps []store.SequenceGap
	err := s.updateHost(ctx, hostID, func(h *hostDoc, exists bool) error {
		if !exists {
			return store.ErrUnknownHost
		}
		var lost int64
		gaps, h.SeqMax, lost = store.Gaps(h.SeqMax, seqs)
		h.EventsLost += lost
		if now := s.now().UTC(); now.After(h.LastSeen) {
			h.LastSeen = now // written anyway: the batch's sender is alive
		}
		return nil
	})
	if errors.Is(err, store.ErrUnknownHost) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("elasticsearch: sequences: %w", err)
	}
	return gaps, nil
}
