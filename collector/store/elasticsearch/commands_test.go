package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

func testCommand(id, state string, issued time.Time) store.CommandRecord {
	return store.CommandRecord{
		ID: id, Action: killswitch.ActionDisableRMM, Targets: "hosts", Issuer: "responder:alice", Reason: "test",
		IssuedAt: issued, NotAfter: issued.Add(time.Hour), State: state,
		Signed: killswitch.Signed{Payload: []byte(`{"id":"` + id + `"}`)},
	}
}

// TestCommandsLayout checks what the command store leaves in the cluster:
// its two indices with strict mappings, the signed envelope byte for byte
// (every byte value in payload and signature), and one audit document per
// issue, approval and acknowledgement.
func TestCommandsLayout(t *testing.T) {
	t.Parallel()
	s := OpenTest(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now().UTC()

	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	rec := testCommand("ks-layout", store.CommandPendingApproval, now)
	rec.Signed = killswitch.Signed{Payload: all, Signatures: []killswitch.Signature{{KeyID: "k1", Sig: all[128:]}}}
	rec.Required = 2
	hosts := []string{"till/with/slashes", "till ünïcode #1", "till-b"}
	if err := s.CreateCommand(ctx, rec, hosts); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateCommand(ctx, rec, hosts); err == nil {
		t.Fatal("a second CreateCommand with the same id succeeded")
	}
	signed := rec.Signed
	signed.Signatures = append(signed.Signatures, killswitch.Signature{KeyID: "k2", Sig: all[:64]})
	if err := s.UpdateCommand(ctx, rec.ID, 1, signed, store.CommandActive); err != nil {
		t.Fatal(err)
	}
	got, gotHosts, err := s.Command(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Signed.Payload, all) || len(got.Signed.Signatures) != 2 ||
		!bytes.Equal(got.Signed.Signatures[0].Sig, all[128:]) || !bytes.Equal(got.Signed.Signatures[1].Sig, all[:64]) ||
		got.Signed.Signatures[1].KeyID != "k2" || got.Required != 2 || got.State != store.CommandActive {
		t.Fatalf("envelope did not round-trip: %+v", got)
	}
	if want := []string{"till ünïcode #1", "till-b", "till/with/slashes"}; len(gotHosts) != 3 ||
		gotHosts[0].HostID != want[0] || gotHosts[1].HostID != want[1] || gotHosts[2].HostID != want[2] {
		t.Fatalf("hosts %+v, want %v", gotHosts, want)
	}

	// Ids with "/" travel in bodies: a host with slashes is delivered to and
	// acknowledges like any other.
	pend, err := s.PendingCommands(ctx, "till/with/slashes", now)
	if err != nil || len(pend) != 1 || !bytes.Equal(pend[0].Payload, all) {
		t.Fatalf("pending %v %v", pend, err)
	}
	res := killswitch.Result{Status: killswitch.StatusRefused, Refusal: "expired", Detail: "late"}
	if err := s.AckCommand(ctx, rec.ID, "till/with/slashes", res, now); err != nil {
		t.Fatal(err)
	}
	// Acknowledged before delivery: delivered_at is the ack's time.
	if err := s.AckCommand(ctx, rec.ID, "till-b", killswitch.Result{Status: killswitch.StatusOK}, now); err != nil {
		t.Fatal(err)
	}
	_, gotHosts, _ = s.Command(ctx, rec.ID)
	if h := gotHosts[1]; h.State != store.HostAcked || !h.DeliveredAt.Equal(now) || !h.AckedAt.Equal(now) {
		t.Errorf("acked without delivery: %+v", h)
	}
	if h := gotHosts[2]; h.Result == nil || h.Result.Refusal != "expired" || h.Result.Status != killswitch.StatusRefused {
		t.Errorf("result not kept: %+v", h)
	}

	// The indices, with strict mappings and the envelope not indexed.
	var m map[string]struct {
		Mappings struct {
			Dynamic    string                    `json:"dynamic"`
			Properties map[string]map[string]any `json:"properties"`
		} `json:"mappings"`
	}
	cmdIndex, hostIndex := s.stateIndex(kindCommands), s.stateIndex(kindCommandHosts)
	if err := s.do(ctx, esapi.IndicesGetMappingRequest{Index: []string{cmdIndex, hostIndex}}, &m); err != nil {
		t.Fatal(err)
	}
	if p := m[cmdIndex].Mappings; p.Dynamic != "strict" || p.Properties["signed"]["enabled"] != false ||
		p.Properties["activated"]["type"] != "long" || p.Properties["not_after"]["type"] != "date_nanos" {
		t.Errorf("%s mapping %+v", cmdIndex, p)
	}
	if p := m[hostIndex].Mappings; p.Dynamic != "strict" || p.Properties["result"]["enabled"] != false ||
		p.Properties["host_id"]["type"] != "keyword" {
		t.Errorf("%s mapping %+v", hostIndex, p)
	}

	// The audit trail: ECS configuration events.
	audit := s.Stream(StreamAudit)
	if err := s.refresh(ctx, audit); err != nil {
		t.Fatal(err)
	}
	r, err := s.search(ctx, audit, map[string]any{"size": 100, "query": map[string]any{"term": map[string]any{"event.category": "configuration"}}})
	if err != nil {
		t.Fatal(err)
	}
	type auditDoc struct {
		Event struct {
			Kind, Action, Outcome, Dataset, Reason string
			Category, Type                         []string
		}
		Host      struct{ ID string }
		User      struct{ Name string }
		Tillwatch struct {
			Killswitch struct {
				CommandID             string `json:"command_id"`
				Action, State, Status string
				Refusal, Detail       string
				Signatures, Hosts     int
				RequiredApprovals     int `json:"required_approvals"`
			}
		}
	}
	byAction := map[string][]auditDoc{}
	for _, h := range r.Hits.Hits {
		var d auditDoc
		if err := json.Unmarshal(h.Source, &d); err != nil {
			t.Fatal(err)
		}
		if d.Event.Kind != "event" || d.Event.Dataset != StreamAudit || d.Tillwatch.Killswitch.CommandID != rec.ID {
			t.Errorf("audit document %s", h.Source)
		}
		byAction[d.Event.Action] = append(byAction[d.Event.Action], d)
	}
	if d := byAction["killswitch-issue"]; len(d) != 1 || d[0].Tillwatch.Killswitch.State != store.CommandPendingApproval ||
		d[0].Tillwatch.Killswitch.Hosts != 3 || d[0].User.Name != "responder:alice" || d[0].Event.Reason != "test" ||
		d[0].Tillwatch.Killswitch.RequiredApprovals != 2 || d[0].Event.Type[0] != "creation" {
		t.Errorf("issue audit %+v", d)
	}
	if d := byAction["killswitch-approve"]; len(d) != 1 || d[0].Tillwatch.Killswitch.State != store.CommandActive ||
		d[0].Tillwatch.Killswitch.Signatures != 2 || d[0].Tillwatch.Killswitch.Action != killswitch.ActionDisableRMM {
		t.Errorf("approve audit %+v", d)
	}
	// Every field the audit documents carry is mapped with the type a query
	// expects (by the templates, or by their strings_as_keyword rule).
	var fm map[string]struct {
		Mappings map[string]struct {
			Mapping map[string]struct{ Type string } `json:"mapping"`
		} `json:"mappings"`
	}
	wantTypes := map[string]string{
		"tillwatch.killswitch.command_id": "keyword", "tillwatch.killswitch.action": "keyword",
		"tillwatch.killswitch.state": "keyword", "tillwatch.killswitch.status": "keyword",
		"tillwatch.killswitch.refusal": "keyword", "tillwatch.killswitch.detail": "keyword",
		"tillwatch.killswitch.hosts": "long", "tillwatch.killswitch.signatures": "long",
		"user.name": "keyword", "event.reason": "keyword", "event.category": "keyword", "host.id": "keyword",
	}
	var fields []string
	for f := range wantTypes {
		fields = append(fields, f)
	}
	if err := s.do(ctx, esapi.IndicesGetFieldMappingRequest{Index: []string{audit}, Fields: fields}, &fm); err != nil {
		t.Fatal(err)
	}
	for f, want := range wantTypes {
		var got []string
		for _, idx := range fm {
			for _, leaf := range idx.Mappings[f].Mapping {
				got = append(got, leaf.Type)
			}
		}
		if len(got) == 0 || got[0] != want {
			t.Errorf("audit field %s mapped %v, want %s", f, got, want)
		}
	}

	acks := byAction["killswitch-ack"]
	sort.Slice(acks, func(i, j int) bool { return acks[i].Host.ID < acks[j].Host.ID })
	if len(acks) != 2 || acks[0].Host.ID != "till-b" || acks[0].Event.Outcome != "success" ||
		acks[1].Host.ID != "till/with/slashes" || acks[1].Event.Outcome != "failure" ||
		acks[1].Tillwatch.Killswitch.Status != killswitch.StatusRefused || acks[1].Tillwatch.Killswitch.Refusal != "expired" ||
		acks[1].Tillwatch.Killswitch.Detail != "late" {
		t.Errorf("ack audit %+v", acks)
	}
}

// TestCommandsPaging crosses search and bulk boundaries with small pages:
// every host of a command is written and read back, and Commands pages up
// to its limit, newest first.
func TestCommandsPaging(t *testing.T) {
	t.Parallel()
	s := OpenTest(t, Options{})
	s.pageSize.Store(7)
	s.bulkSize.Store(5)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now := time.Now().UTC()

	var hosts []string
	for i := range 23 {
		hosts = append(hosts, fmt.Sprintf("till-%03d", 22-i))
	}
	hosts = append(hosts, "till-005") // a duplicate is one host
	if err := s.CreateCommand(ctx, testCommand("ks-many", store.CommandActive, now), hosts); err != nil {
		t.Fatal(err)
	}
	_, got, err := s.Command(ctx, "ks-many")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 23 {
		t.Fatalf("%d hosts, want 23", len(got))
	}
	for i, h := range got {
		if want := fmt.Sprintf("till-%03d", i); h.HostID != want || h.State != store.HostPending {
			t.Fatalf("host %d = %+v, want %s pending", i, h, want)
		}
	}

	for i := range 11 {
		if err := s.CreateCommand(ctx, testCommand(fmt.Sprintf("ks-%02d", i), store.CommandActive, now), []string{"till-000"}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.Commands(ctx, 10)
	if err != nil || len(list) != 10 || list[0].ID != "ks-10" || list[9].ID != "ks-01" {
		t.Fatalf("Commands(10) = %d %v", len(list), err)
	}
	if list, err := s.Commands(ctx, 0); err != nil || len(list) != 12 || list[11].ID != "ks-many" {
		t.Fatalf("Commands(0) = %d %v", len(list), err)
	}
	// till-000 has 12 commands, delivered oldest first, across pages.
	pend, err := s.PendingCommands(ctx, "till-000", now)
	if err != nil || len(pend) != 12 {
		t.Fatalf("pending %d %v", len(pend), err)
	}
	for i, sg := range pend {
		want := `{"id":"ks-many"}`
		if i > 0 {
			want = fmt.Sprintf(`{"id":"ks-%02d"}`, i-1)
		}
		if string(sg.Payload) != want {
			t.Fatalf("pending[%d] = %s, want %s", i, sg.Payload, want)
		}
	}
	_, got, _ = s.Command(ctx, "ks-07")
	if len(got) != 1 || got[0].State != store.HostDelivered || !got[0].DeliveredAt.Equal(now) {
		t.Fatalf("delivery not marked: %+v", got)
	}
}

// TestCommandsGeneration: the generation is exact and strictly increasing,
// even past a stamp written by a collector whose clock runs ahead, and an
// update of a command already active does not move it.
func TestCommandsGeneration(t *testing.T) {
	t.Parallel()
	s := OpenTest(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now().UTC()
	if g, err := s.CommandsGeneration(ctx); err != nil || g != 0 {
		t.Fatalf("empty store generation %d %v", g, err)
	}
	if err := s.CreateCommand(ctx, testCommand("ks-a", store.CommandPendingApproval, now), []string{"h"}); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.CommandsGeneration(ctx); g != 0 {
		t.Fatalf("a command awaiting approval moved the generation to %d", g)
	}
	if err := s.CreateCommand(ctx, testCommand("ks-b", store.CommandActive, now), []string{"h"}); err != nil {
		t.Fatal(err)
	}
	// Another collector's clock far ahead: a stamp no double holds exactly.
	const ahead = int64(1)<<62 + 1
	if _, err := s.modifyCommand(ctx, "ks-b", func(d *commandDoc) error { d.Activated = ahead; return nil }); err != nil {
		t.Fatal(err)
	}
	if g, err := s.CommandsGeneration(ctx); err != nil || g != ahead {
		t.Fatalf("generation %d %v, want %d", g, err, ahead)
	}
	sg := testCommand("ks-a", "", now).Signed
	if err := s.UpdateCommand(ctx, "ks-a", len(sg.Signatures), sg, store.CommandActive); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.CommandsGeneration(ctx); g != ahead+1 {
		t.Fatalf("generation after approval %d, want %d", g, ahead+1)
	}
	if err := s.UpdateCommand(ctx, "ks-a", len(sg.Signatures), sg, store.CommandActive); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.CommandsGeneration(ctx); g != ahead+1 {
		t.Fatalf("re-approving an active command moved the generation to %d", g)
	}
	if err := s.UpdateCommand(ctx, "ks-zz", 0, sg, store.CommandActive); !errors.Is(err, store.ErrUnknownCommand) {
		t.Fatalf("unknown command: %v", err)
	}
	if err := s.AckCommand(ctx, "ks-zz", "h", killswitch.Result{Status: "ok"}, now); !errors.Is(err, store.ErrUnknownCommand) {
		t.Fatalf("ack of an unknown command: %v", err)
	}
}

// TestCommandMaxTargets: a command addressing killswitch.MaxTargets hosts
// is stored and read back whole (no 10,000-hit result window cap).
func TestCommandMaxTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 20,000 documents")
	}
	t.Parallel()
	s := OpenTest(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now := time.Now().UTC()
	hosts := make([]string, killswitch.MaxTargets)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("till-%05d", i)
	}
	if err := s.CreateCommand(ctx, testCommand("ks-max", store.CommandActive, now), hosts); err != nil {
		t.Fatal(err)
	}
	if pend, err := s.PendingCommands(ctx, hosts[len(hosts)-1], now); err != nil || len(pend) != 1 {
		t.Fatalf("pending for the last host: %d %v", len(pend), err)
	}
	_, got, err := s.Command(ctx, "ks-max")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(hosts) {
		t.Fatalf("%d hosts read back, want %d", len(got), len(hosts))
	}
	for i, h := range got {
		if h.HostID != hosts[i] {
			t.Fatalf("host %d = %s, want %s", i, h.HostID, hosts[i])
		}
	}
	if got[len(got)-1].State != store.HostDelivered {
		t.Errorf("last host %+v, want delivered", got[len(got)-1])
	}
}
