package elasticsearch

// Audit documents (the audit data stream).

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tillwatch/tillwatch/internal/event"
)

// audit writes one ECS document to the audit data stream: enrolments and
// token creation (event.category iam); kill-switch commands and their
// acknowledgements use auditEvent (commands.go).
func (s *Store) audit(ctx context.Context, action, typ, hostID string, extra map[string]any) error {
	if err := s.auditEvent(ctx, "iam", action, typ, "success", hostID, extra); err != nil {
		return fmt.Errorf("elasticsearch: audit %s: %w", action, err)
	}
	return nil
}

// auditEvent writes one ECS audit document of event.category category; the
// caller words the error.
func (s *Store) auditEvent(ctx context.Context, category, action, typ, outcome, hostID string, extra map[string]any) error {
	now := s.now().UTC()
	doc := map[string]any{
		"@timestamp": now.Format(time.RFC3339Nano),
		"ecs":        map[string]any{"version": event.ECSVersion},
		"event": map[string]any{"id": event.NewID(), "kind": "event", "category": []string{category}, "type": []string{typ},
			"action": action, "outcome": outcome, "dataset": StreamAudit, "ingested": now.Format(time.RFC3339Nano)},
	}
	for k, v := range extra {
		if ev, ok := v.(map[string]any); ok && k == "event" {
			maps.Copy(doc["event"].(map[string]any), ev) // event.reason and the like
			continue
		}
		doc[k] = v
	}
	if _, ok := doc["host"]; !ok && hostID != "" {
		doc["host"] = map[string]any{"id": hostID}
	}
	return s.do(ctx, esapi.CreateRequest{Index: s.Stream(StreamAudit), DocumentID: doc["event"].(map[string]any)["id"].(string),
		Body: jsonBody(doc)}, nil)
}
