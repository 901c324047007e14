package main

import (
	"io"
	"testing"
	"time"

	"golang.org/x/sys/windows/svc"
)

// runHandler drives handler.Execute as the service control manager would.
func runHandler(t *testing.T, args []string, stop bool) (bool, uint32) {
	t.Helper()
	h := &handler{args: args, log: io.Discard}
	req := make(chan svc.ChangeRequest)
	status := make(chan svc.Status, 16)
	type result struct {
		ssec bool
		code uint32
	}
	done := make(chan result, 1)
	go func() { s, c := h.Execute(nil, req, status); done <- result{s, c} }()
	if stop {
		deadline := time.After(30 * time.Second)
		for running := false; !running; {
			select {
			case st := <-status:
				running = st.State == svc.Running
			case <-deadline:
				t.Fatal("service never reported Running")
			}
		}
		req <- svc.ChangeRequest{Cmd: svc.Stop}
	}
	select {
	case r := <-done:
		return r.ssec, r.code
	case <-time.After(60 * time.Second):
		t.Fatal("Execute did not return")
	}
	return false, 0
}

func TestServiceHandler(t *testing.T) {
	t.Run("stop cancels run and exits 0", func(t *testing.T) {
		ssec, code := runHandler(t, []string{"run", "--no-collector", "--mode", "monitor", "--state-dir", t.TempDir(), "--spool", t.TempDir(), "--metrics-listen", ""}, true)
		if ssec || code != 0 {
			t.Fatalf("Execute = %v, %d; want a clean stop", ssec, code)
		}
	})
	t.Run("a usage error is a service-specific exit 2", func(t *testing.T) {
		ssec, code := runHandler(t, []string{"run", "--mode", "bogus", "--no-collector"}, false)
		if !ssec || code != 2 {
			t.Fatalf("Execute = %v, %d; want true, 2", ssec, code)
		}
	})
}
