package elasticsearch

// Hosts: the host document, its optimistic-concurrency update, enrolment.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/store"
)

// cachedHost is a host document and the version it was written at.
type cachedHost struct {
	doc     hostDoc
	version docVersion
}

// maxHostsRemembered bounds touched and hostVersions (a fleet is thousands
// of hosts); a full map starts over.
const maxHostsRemembered = 1 << 17

type hostDoc struct {
	HostID         string            `json:"host_id"`
	HostName       string            `json:"host_name"`
	AgentID        string            `json:"agent_id"`
	AgentVersion   string            `json:"agent_version"`
	OS             string            `json:"os"`
	Labels         map[string]string `json:"labels,omitempty"`
	Mode           string            `json:"mode"`
	Health         map[string]string `json:"health,omitempty"`
	EnrolledAt     time.Time         `json:"enrolled_at"`
	LastSeen       time.Time         `json:"last_seen"`
	SeqMax         int64             `json:"seq_max"`
	EventsLost     int64             `json:"events_lost"`
	CredentialHash string            `json:"credential_hash"`
	KeyHash        string            `json:"key_hash,omitempty"` // host-bound enrolment (store.BindKey)
	ConfigVersion  string            `json:"config_version,omitempty"`
	RulesVersion   string            `json:"rules_version,omitempty"`
}

// casRetries bounds optimistic-concurrency retries on one host document;
// contention is one host's own requests, so a few suffice.
const casRetries = 20

// updateHost applies fn to the host document under optimistic concurrency:
// read with _seq_no, write with if_seq_no, retry on conflict. fn gets
// exists=false for a host never enrolled and may return errSkip to write
// nothing.
//
// The first attempt starts from the version this collector wrote last, if
// it has one, instead of reading it back: every batch updates its host
// (sequence tracking), and that real-time GET was one more round trip and
// read per batch for the node (the ingest benchmark). The write is
// conditional either way, so a version someone else replaced
// (another collector, a partial update) only costs a conflict and a read.
func (s *Store) updateHost(ctx context.Context, hostID string, fn func(h *hostDoc, exists bool) error) error {
	index := s.stateIndex("hosts")
	for attempt := range casRetries {
		h, version, found, cached := s.cachedHost(hostID)
		if !cached || attempt > 0 {
			r, err := getDoc[hostDoc](ctx, s, index, hostID)
			if err != nil {
				return err
			}
			h, version, found = r.Source, r.docVersion, r.Found
		}
		if err := fn(&h, found); err != nil {
			return err
		}
		req := esapi.IndexRequest{Index: index, DocumentID: hostID, Body: jsonBody(h)}
		if found {
			req.IfSeqNo, req.IfPrimaryTerm = esapi.IntPtr(int(version.SeqNo)), esapi.IntPtr(int(version.PrimaryTerm))
		} else {
			req.OpType = "create"
		}
		var written docVersion
		err := s.do(ctx, req, &written)
		if statusOf(err) == http.StatusConflict {
			s.forgetHost(hostID)
			s.m.conflicts.Inc()
			continue // someone else wrote the host; read again
		}
		if err != nil {
			s.forgetHost(hostID)
			return err
		}
		s.rememberHost(hostID, h, written)
		return nil
	}
	return fmt.Errorf("host %s: still conflicting after %d attempts", hostID, casRetries)
}

// cachedHost returns a copy of the host document this collector wrote
// last, and its version.
func (s *Store) cachedHost(hostID string) (h hostDoc, v docVersion, found, ok bool) {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	c, ok := s.hostVersions[hostID]
	if !ok {
		return hostDoc{}, docVersion{}, false, false
	}
	h = c.doc
	h.Labels, h.Health = maps.Clone(h.Labels), maps.Clone(h.Health) // fn may change them
	return h, c.version, true, true
}

func (s *Store) rememberHost(hostID string, h hostDoc, v docVersion) {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	if s.hostVersions == nil || len(s.hostVersions) >= maxHostsRemembered {
		s.hostVersions = map[string]cachedHost{}
	}
	h.Labels, h.Health = maps.Clone(h.Labels), maps.Clone(h.Health)
	s.hostVersions[hostID] = cachedHost{doc: h, version: v}
}

func (s *Store) forgetHost(hostID string) {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	delete(s.hostVersions, hostID)
}

// Enroll implements store.Store.
func (s *Store) Enroll(ctx context.Context, req api.EnrollRequest, by store.Enroller) (api.EnrollResponse, error) {
	if req.HostID == "" {
		return api.EnrollResponse{}, errors.New("elasticsearch: enroll: empty host id")
	}
	if by.TokenHash != "" {
		if err := s.useToken(ctx, by.TokenHash); err != nil {
			return api.EnrollResponse{}, err
		}
	}
	tok, hash, err := s.putToken(ctx, api.RoleAgent, req.HostID, by.CredentialExpires, 0)
	if err != nil {
		return api.EnrollResponse{}, err
	}
	var agentID, oldHash string
	reenrol := false
	// The key check and the write are one conditional write of the host
	// document (if_seq_no), so two claims of one host cannot both pass.
	err = s.updateHost(ctx, req.HostID, func(h *hostDoc, exists bool) error {
		now := s.now().UTC()
		keyHash, err := store.BindKey(exists, h.KeyHash, req.HostKey, by)
		if err != nil {
			return err
		}
		if !exists {
			*h = hostDoc{HostID: req.HostID, AgentID: store.NewAgentID()}
		}
		h.KeyHash = keyHash
		reenrol, oldHash = exists, h.CredentialHash
		h.HostName, h.AgentVersion, h.OS, h.Labels = req.HostName, req.AgentVersion, req.OS, req.Labels
		h.EnrolledAt, h.LastSeen, h.CredentialHash = now, now, hash
		agentID = h.AgentID
		return nil
	})
	if errors.Is(err, store.ErrHostKeyMismatch) {
		// The credential made for the claim never became the host's, so
		// Authenticate refuses it; mark it for the audit trail.
		s.revokeTokenDoc(ctx, hash)
		aerr := s.auditEvent(ctx, "iam", "host-enrol-refused", "denied", "failure", req.HostID, map[string]any{
			"host":  map[string]any{"id": req.HostID, "name": req.HostName},
			"event": map[string]any{"reason": "host id is bound to another host key"},
		})
		return api.EnrollResponse{}, errors.Join(err, aerr)
	}
	if err != nil {
		return api.EnrollResponse{}, fmt.Errorf("elasticsearch: enroll: %w", err)
	}
	// The host's credential changed (and an agent token made for it before
	// it enrolled stopped working): collectors forget what they remember.
	if err := s.credentialsChanged(ctx); err != nil {
		return api.EnrollResponse{}, fmt.Errorf("elasticsearch: enroll: %w", err)
	}
	if oldHash != "" {
		// Authenticate already refuses the old credential (it is no longer
		// the host's); marking it keeps the token index an audit trail.
		err := s.do(ctx, esapi.UpdateRequest{Index: s.stateIndex("tokens"), DocumentID: oldHash,
			Body: jsonBody(map[string]any{"doc": map[string]any{"revoked": true}})}, nil)
		if err != nil && statusOf(err) != http.StatusNotFound {
			s.log.Warn("could not mark the previous credential revoked (it is refused anyway)", "host_id", req.HostID, "err", err)
		}
	}
	typ := "creation"
	if reenrol {
		typ = "change"
	}
	if err := s.audit(ctx, "host-enrolled", typ, req.HostID, map[string]any{
		"host":  map[string]any{"id": req.HostID, "name": req.HostName},
		"agent": map[string]any{"id": agentID, "type": "tillwatch-sensor", "version": req.AgentVersion},
	}); err != nil {
		return api.EnrollResponse{}, err
	}
	return api.EnrollResponse{AgentID: agentID, HostID: req.HostID, Credential: tok, CredentialExpires: by.CredentialExpires}, nil
}
