package elasticsearch

// Heartbeats and last_seen.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
)

// touchEvery bounds how often one collector writes a host's last_seen from
// event batches. Heartbeats (every 30 s) always write it; the silence
// watchdog works in minutes.
const touchEvery = 5 * time.Second

// claimTouch reports whether host's last_seen is due for a write at now,
// and if so records that it is being written.
func (s *Store) claimTouch(host string, now time.Time) bool {
	s.touchMu.Lock()
	defer s.touchMu.Unlock()
	if at, ok := s.touched[host]; ok && now.Sub(at) < touchEvery && !now.Before(at) {
		return false
	}
	if s.touched == nil || len(s.touched) >= maxHostsRemembered {
		s.touched = map[string]time.Time{}
	}
	s.touched[host] = now
	return true
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, hostID string, hb api.Heartbeat) error {
	err := s.updateHost(ctx, hostID, func(h *hostDoc, exists bool) error {
		if !exists {
			return store.ErrUnknownHost
		}
		h.LastSeen = s.now().UTC()
		h.Health = hb.Health
		if hb.AgentVersion != "" {
			h.AgentVersion = hb.AgentVersion
		}
		if hb.Mode != "" {
			h.Mode = hb.Mode
		}
		if hb.HostName != "" {
			h.HostName = hb.HostName
		}
		if hb.ConfigVersion != "" {
			h.ConfigVersion = hb.ConfigVersion
		}
		if hb.RulesVersion != "" {
			h.RulesVersion = hb.RulesVersion
		}
		return nil
	})
	if errors.Is(err, store.ErrUnknownHost) {
		return err
	}
	if err != nil {
		return fmt.Errorf("elasticsearch: heartbeat: %w", err)
	}
	return nil
}

// touchHosts advances last_seen of the hosts that sent events and are
// marked true (the others' sequence tracking writes it). A partial update
// is atomic per document in Elasticsearch; a host never enrolled is skipped.
func (s *Store) touchHosts(ctx context.Context, hosts map[string]bool) error {
	now := s.now().UTC()
	for h, touch := range hosts {
		if !touch || !s.claimTouch(h, now) {
			continue
		}
		err := s.do(ctx, esapi.UpdateRequest{Index: s.stateIndex("hosts"), DocumentID: h, RetryOnConflict: esapi.IntPtr(casRetries),
			Body: jsonBody(map[string]any{"doc": map[string]any{"last_seen": now}})}, nil)
		if err != nil && statusOf(err) != http.StatusNotFound {
			return fmt.Errorf("elasticsearch: mark host %s seen: %w", h, err)
		}
	}
	return nil
}
