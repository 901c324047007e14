package shipper

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tillwatch/tillwatch/internal/event"
)

func TestMemQueueBatchesAndAcks(t *testing.T) {
	t.Parallel()
	q := NewMemQueue(100)
	for i := range 10 {
		seq, err := q.Append(event.KindAlert, func(int64) ([]byte, error) { return []byte(fmt.Sprintf(`{"n":%d}`, i)), nil })
		if err != nil || seq != int64(i+1) {
			t.Fatalf("append %d: seq %d, %v", i, seq, err)
		}
	}
	select {
	case <-q.Ready():
	default:
		t.Fatal("Ready not signalled after Append")
	}
	b, _ := q.Peek(4, 1<<20)
	if len(b.Lines) != 4 || string(b.Lines[0]) != `{"n":0}` {
		t.Fatalf("peek = %q", b.Lines)
	}
	if err := q.Ack(b); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(b); err == nil {
		t.Error("acking the same batch twice must fail, it would drop unsent events")
	}
	b, _ = q.Peek(100, 20) // byte bound: two 7-byte lines plus newlines
	if len(b.Lines) != 2 || string(b.Lines[0]) != `{"n":4}` {
		t.Fatalf("byte-bounded peek = %q", b.Lines)
	}
	big, _ := q.Peek(100, 1)
	if len(big.Lines) != 1 {
		t.Errorf("a batch always holds at least one event, got %d", len(big.Lines))
	}
	if q.Len() != 6 {
		t.Errorf("Len = %d, want 6", q.Len())
	}
}

func TestMemQueueDropsTelemetryBeforeAlerts(t *testing.T) {
	t.Parallel()
	q := NewMemQueue(3)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(appendLine(q, "a1", event.KindAlert))
	must(appendLine(q, "t1", event.KindEvent))
	must(appendLine(q, "t2", event.KindEvent))
	inflight, _ := q.Peek(2, 1<<20) // a1 and t1 are in flight

	if err := appendLine(q, "t3", event.KindEvent); !errors.Is(err, ErrFull) {
		t.Errorf("telemetry into a full queue: %v, want ErrFull", err)
	}
	must(appendLine(q, "a2", event.KindAlert)) // evicts t2, not the in-flight t1
	if err := appendLine(q, "a3", event.KindAlert); !errors.Is(err, ErrFull) {
		t.Errorf("alert into a queue of alerts and in-flight events: %v, want ErrFull", err)
	}
	must(q.Ack(inflight))
	rest, _ := q.Peek(10, 1<<20)
	if len(rest.Lines) != 1 || string(rest.Lines[0]) != "a2" {
		t.Errorf("after ack the queue holds %q, want [a2]", rest.Lines)
	}
	if d := q.Dropped(); d[event.KindEvent] != 2 || d[event.KindAlert] != 1 {
		t.Errorf("dropped = %v, want 2 telemetry, 1 alert", d)
	}
}

func appendLine(q *MemQueue, line, kind string) error {
	_, err := q.Append(kind, func(int64) ([]byte, error) { return []byte(line), nil })
	return err
}
