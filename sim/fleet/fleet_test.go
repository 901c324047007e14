package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/collectortest"
)

// TestCollectorRestartUnderThousandSensors stops the collector while 1,000
// simulated sensors raise alerts, restarts it on the same address and data,
// and checks that every alert is stored exactly once and that the fleet came
// back spread out rather than in one burst.
func TestCollectorRestartUnderThousandSensors(t *testing.T) {
	sensors, perSensor := 1000, 4
	if testing.Short() || raceEnabled {
		sensors = 200
		t.Logf("%d sensors (race detector or -short); make test also runs the full 1,000 without -race", sensors)
	}
	dir := t.TempDir()
	c := collectortest.Start(t, dir, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, err := Start(ctx, Options{
		URL: c.URL, CAFile: c.CAFile, EnrollToken: c.Token(api.RoleSensor),
		Sensors: sensors, AlertInterval: 2 * time.Second, AlertsPerSensor: perSensor,
		HeartbeatInterval: 30 * time.Second, MaxBackoff: 8 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := f.Stats(); st.Enrolled != int64(sensors) {
		t.Fatalf("enrolled %d of %d (%d errors)", st.Enrolled, sensors, st.EnrollErrors)
	}
	time.Sleep(2 * time.Second) // alerts are flowing
	addr := c.Addr
	c.Stop()
	down := time.Now()
	time.Sleep(4 * time.Second) // the fleet keeps raising alerts into its queues
	c2 := collectortest.Start(t, dir, addr)
	up := time.Now()
	t.Logf("collector down for %s", up.Sub(down).Round(time.Millisecond))

	want := int64(sensors * perSensor)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st := f.Stats()
		if st.AlertsRaised == want && st.Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleet did not drain: %+v", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	hosts, err := c2.Client(c2.Token(api.RoleAnalyst)).Hosts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var stored int64
	for _, h := range hosts {
		stored += h.AlertCount
	}
	if stored != want {
		t.Fatalf("collector stored %d alerts, want exactly %d", stored, want)
	}
	rec := f.Recoveries(up)
	if len(rec) < sensors/2 {
		t.Fatalf("only %d sensors saw the outage and came back", len(rec))
	}
	spread := rec[len(rec)*9/10].Sub(rec[len(rec)/10])
	t.Logf("%d sensors reconnected; 10th to 90th percentile spread %s; send errors %d", len(rec), spread.Round(time.Millisecond), f.Stats().SendErrors)
	if spread < 500*time.Millisecond {
		t.Errorf("reconnections bunched within %s: jitter is not spreading the fleet", spread)
	}
	cancel()
	f.Wait()
}
