// Package fleet simulates many sensors from one process, speaking the real
// protocol through the real client and shipper: each simulated sensor
// enrols, heartbeats with jitter, raises synthetic alerts at a rate and
// ships them with the same queue, batching, retries and backoff as a real
// till. Load, reliability and fan-out tests and benchmarks run on it.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/sensor/identity"
	"github.com/tillwatch/tillwatch/sensor/shipper"
)

// Options configure a simulated fleet.
type Options struct {
	URL         string
	CAFile      string
	EnrollToken string
	// Sensors is the number of simulated sensors (default 10).
	Sensors int
	// HostPrefix names hosts <prefix>-<n> (default "sim").
	HostPrefix string
	// AlertInterval is the mean time between alerts of one sensor; 0 sends
	// none. Each interval is jittered by ±50%.
	AlertInterval time.Duration
	// AlertsPerSensor stops a sensor's alerts after this many (0 = no limit).
	AlertsPerSensor int
	// HeartbeatInterval between heartbeats (default 30s, ±10% jitter).
	HeartbeatInterval time.Duration
	// EnrollConcurrency bounds simultaneous enrolments (default 50).
	EnrollConcurrency int
	// MaxBackoff bounds each sensor's retry backoff (default 30s, as a till).
	MaxBackoff time.Duration
	Log        *slog.Logger
	// OnSend, if set, is called after every batch send of every sensor
	// (concurrently), so fault tests can see what the collector answered
	// when.
	OnSend func(Send)
	// Commands makes every sensor long-poll for kill-switch commands,
	// verify each against the collector key it pinned at enrolment (as a
	// real sensor does) and acknowledge it.
	Commands bool
	// OnAck, if set, is called after each acknowledgement was accepted.
	OnAck func(Ack)
}

// Ack is one simulated sensor's acknowledgement of a command.
type Ack struct {
	Host, CommandID string
	Status          string
	At              time.Time
}

// Send is one batch send of a simulated sensor, as OnSend sees it.
type Send struct {
	Host       string
	Start, End time.Time
	// Status is the collector's HTTP status: 200 on success, 0 when no
	// answer came (network error, timeout).
	Status int
	Err    error
}

// Stats are counters over the whole fleet.
type Stats struct {
	Enrolled        int64
	EnrollErrors    int64
	Heartbeats      int64
	HeartbeatErrors int64
	AlertsRaised    int64 // written into a sensor's queue
	AlertsConfirmed int64 // the collector answered for them
	SendErrors      int64 // failed batch sends (retried)
	Queued          int64 // still waiting in queues when Stats was taken
	Polling         int64 // command long-polls in flight now
	CommandAcks     int64 // commands acknowledged
	AckErrors       int64
}

// Fleet is a running simulated fleet.
type Fleet struct {
	o       Options
	sensors []*sensor
	stats   struct {
		enrolled, enrollErrors, heartbeats, heartbeatErrors, raised, confirmed, sendErrors atomic.Int64
		polling, acks, ackErrors                                                           atomic.Int64
	}
	wg sync.WaitGroup
}

type sensor struct {
	hostID string
	c      *client.Client
	q      *shipper.MemQueue
	ship   *shipper.Shipper
	// recovered is when the first send after a failure succeeded (zero
	// until then), to measure how a fleet returns after an outage.
	mu        sync.Mutex
	failing   bool
	recovered []time.Time
}

// countingSender wraps the client to count and to note recoveries.
type countingSender struct {
	f *Fleet
	s *sensor
	c *client.Client
}

func (cs countingSender) SendEvents(ctx context.Context, ndjson []byte) (api.IngestResponse, error) {
	start := time.Now()
	resp, err := cs.c.SendEvents(ctx, ndjson)
	if cs.f.o.OnSend != nil {
		snd := Send{Host: cs.s.hostID, Start: start, End: time.Now(), Status: http.StatusOK, Err: err}
		var he *client.HTTPError
		switch {
		case errors.As(err, &he):
			snd.Status = he.StatusCode
		case err != nil:
			snd.Status = 0
		}
		cs.f.o.OnSend(snd)
	}
	cs.s.mu.Lock()
	defer cs.s.mu.Unlock()
	if err != nil {
		cs.f.stats.sendErrors.Add(1)
		cs.s.failing = true
		return resp, err
	}
	cs.f.stats.confirmed.Add(int64(resp.Accepted + resp.Duplicates + len(resp.Rejected)))
	if cs.s.failing {
		cs.s.failing = false
		cs.s.recovered = append(cs.s.recovered, time.Now())
	}
	return resp, nil
}

// Start enrols every sensor (bounded concurrency) and starts them; they run
// until ctx is cancelled. It fails if no sensor could enrol.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if o.Sensors <= 0 {
		o.Sensors = 10
	}
	if o.HostPrefix == "" {
		o.HostPrefix = "sim"
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 30 * time.Second
	}
	if o.EnrollConcurrency <= 0 {
		o.EnrollConcurrency = 50
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{o: o}
	base, err := client.New(client.Config{URL: o.URL, CAFile: o.CAFile, Timeout: 30 * time.Second, UserAgent: "tillwatch-fleet-sim"})
	if err != nil {
		return nil, err
	}
	creds := make([]string, o.Sensors)
	keys := make([][]killswitch.PublicKey, o.Sensors)
	sem := make(chan struct{}, o.EnrollConcurrency)
	var wg sync.WaitGroup
	for i := range o.Sensors {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			host := fmt.Sprintf("%s-%05d", o.HostPrefix, i)
			resp, err := base.WithToken(o.EnrollToken).Enroll(ctx, api.EnrollRequest{HostID: host, HostName: host, AgentVersion: "fleet-sim", OS: "linux", HostKey: identity.NewHostKey()})
			if err != nil {
				f.stats.enrollErrors.Add(1)
				o.Log.Debug("enrol failed", "host", host, "err", err)
				return
			}
			f.stats.enrolled.Add(1)
			creds[i] = resp.Credential
			keys[i] = resp.CommandKeys
		}()
	}
	wg.Wait()
	if f.stats.enrolled.Load() == 0 {
		return nil, errors.New("fleet: no simulated sensor could enrol")
	}
	for i, cred := range creds {
		if cred == "" {
			continue
		}
		// One client (and so one connection) per sensor, like real tills.
		c, err := client.New(client.Config{URL: o.URL, CAFile: o.CAFile, Token: cred, Timeout: 30 * time.Second, UserAgent: "tillwatch-fleet-sim"})
		if err != nil {
			return nil, err
		}
		s := &sensor{hostID: fmt.Sprintf("%s-%05d", o.HostPrefix, i), c: c, q: shipper.NewMemQueue(1 << 20)}
		s.ship = shipper.New(shipper.Options{
			Queue: s.q, Sender: countingSender{f, s, c}, Permanent: client.IsPermanent,
			FlushInterval: 200 * time.Millisecond, MaxBackoff: o.MaxBackoff, Registerer: prometheus.NewRegistry(),
		})
		f.sensors = append(f.sensors, s)
		f.wg.Add(3)
		go func() { defer f.wg.Done(); _ = s.ship.Run(ctx) }()
		go func() { defer f.wg.Done(); f.heartbeat(ctx, s, c) }()
		go func() { defer f.wg.Done(); f.alerts(ctx, s) }()
		if o.Commands {
			ks, err := killswitch.NewKeySet(keys[i]...)
			if err != nil {
				return nil, fmt.Errorf("fleet: keys from enrolment: %w", err)
			}
			f.wg.Add(1)
			go func() { defer f.wg.Done(); f.commands(ctx, s, c, ks) }()
		}
	}
	return f, nil
}

func (f *Fleet) heartbeat(ctx context.Context, s *sensor, c *client.Client) {
	// The first heartbeat is spread over one interval, as a fleet that
	// started at different times would be.
	select {
	case <-ctx.Done():
		return
	case <-time.After(rand.N(f.o.HeartbeatInterval)):
	}
	for {
		_, err := c.Heartbeat(ctx, api.Heartbeat{HostID: s.hostID, AgentVersion: "fleet-sim", Mode: "monitor", SentAt: time.Now().UTC()})
		if err != nil {
			f.stats.heartbeatErrors.Add(1)
		} else {
			f.stats.heartbeats.Add(1)
		}
		iv := f.o.HeartbeatInterval
		select {
		case <-ctx.Done():
			return
		case <-time.After(iv - iv/10 + rand.N(iv/5+1)):
		}
	}
}

func (f *Fleet) alerts(ctx context.Context, s *sensor) {
	if f.o.AlertInterval <= 0 {
		return
	}
	for n := 0; f.o.AlertsPerSensor == 0 || n < f.o.AlertsPerSensor; n++ {
		iv := f.o.AlertInterval
		select {
		case <-ctx.Done():
			return
		case <-time.After(iv/2 + rand.N(iv+1)):
		}
		a := Alert(s.hostID, n)
		if err := s.ship.Write(ctx, &a); err != nil {
			continue
		}
		f.stats.raised.Add(1)
	}
}

// commands is a simulated sensor's kill-switch loop: long-poll, verify,
// acknowledge (it acts on nothing), with the jittered backoff of a real
// sensor after failures.
func (f *Fleet) commands(ctx context.Context, s *sensor, c *client.Client, ks *killswitch.KeySet) {
	v := &killswitch.Verifier{Keys: ks, HostID: s.hostID}
	done := map[string]bool{}
	backoff := time.Second
	for ctx.Err() == nil {
		f.stats.polling.Add(1)
		cmds, err := c.PendingCommands(ctx, 25*time.Second)
		f.stats.polling.Add(-1)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff/2 + rand.N(backoff)):
			}
			backoff = min(backoff*2, f.o.MaxBackoff)
			continue
		}
		backoff = time.Second
		for i := range cmds {
			cmd, _, verr := v.Verify(&cmds[i])
			res := killswitch.Result{Status: killswitch.StatusNoop, Detail: "simulated sensor"}
			if verr != nil {
				re, _ := killswitch.IsRefused(verr)
				res = killswitch.Result{Status: killswitch.StatusRefused, Refusal: re.Reason, Detail: re.Detail}
			}
			if done[cmd.ID] && verr == nil {
				continue
			}
			if err := c.AckCommand(ctx, cmd.ID, res); err != nil {
				f.stats.ackErrors.Add(1)
				continue
			}
			done[cmd.ID] = true
			f.stats.acks.Add(1)
			if f.o.OnAck != nil {
				f.o.OnAck(Ack{Host: s.hostID, CommandID: cmd.ID, Status: res.Status, At: time.Now()})
			}
		}
	}
}

// Alert is the synthetic alert sensor host raises as its n-th.
func Alert(host string, n int) event.Event {
	now := time.Now().UTC()
	return event.Event{
		Timestamp: now, ECS: event.ECS{Version: event.ECSVersion},
		Event: event.Meta{Kind: event.KindAlert, ID: event.NewID(), Category: []string{"process"}, Type: []string{"start"},
			Action: "simulated", Severity: 21, RiskScore: 21, Dataset: event.DatasetAlerts},
		Rule:   &event.Rule{ID: "TW-SIM-0001", Name: "Simulated alert", Ruleset: event.RulesetSigma},
		Threat: &event.Threat{Framework: "MITRE ATT&CK", Technique: event.Technique{ID: []string{"T1059"}}},
		Host:   event.Host{ID: host, Name: host},
		Agent:  event.Agent{ID: host, Type: event.AgentType, Version: "fleet-sim"},
		Process: &event.Process{PID: int64(1000 + n), Name: "simulated", Executable: "/usr/bin/simulated",
			CommandLine: fmt.Sprintf("simulated %d", n), Parent: &event.ParentProcess{PID: 1, Name: "init", Executable: "/sbin/init"}},
	}
}

// Stats returns the fleet's counters now.
func (f *Fleet) Stats() Stats {
	var queued int64
	for _, s := range f.sensors {
		queued += int64(s.q.Len())
	}
	return Stats{
		Enrolled: f.stats.enrolled.Load(), EnrollErrors: f.stats.enrollErrors.Load(),
		Heartbeats: f.stats.heartbeats.Load(), HeartbeatErrors: f.stats.heartbeatErrors.Load(),
		AlertsRaised: f.stats.raised.Load(), AlertsConfirmed: f.stats.confirmed.Load(),
		SendErrors: f.stats.sendErrors.Load(), Queued: queued,
		Polling: f.stats.polling.Load(), CommandAcks: f.stats.acks.Load(), AckErrors: f.stats.ackErrors.Load(),
	}
}

// Recoveries returns, sorted, when each sensor's sends succeeded again after
// failing since since — how the fleet came back after an outage.
func (f *Fleet) Recoveries(since time.Time) []time.Time {
	var out []time.Time
	for _, s := range f.sensors {
		s.mu.Lock()
		for _, t := range s.recovered {
			if t.After(since) {
				out = append(out, t)
				break
			}
		}
		s.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// Sensors is the number of running simulated sensors.
func (f *Fleet) Sensors() int { return len(f.sensors) }

// Host is the host id of running sensor i.
func (f *Fleet) Host(i int) string { return f.sensors[i].hostID }

// SendAlert sends ev from sensor i at once, bypassing its queue, for
// benchmarks that must know when an alert left the sensor.
func (f *Fleet) SendAlert(ctx context.Context, i int, ev event.Event) error {
	line, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	resp, err := f.sensors[i].c.SendEvents(ctx, append(line, '\n'))
	if err != nil {
		return err
	}
	if len(resp.Rejected) > 0 {
		return fmt.Errorf("fleet: alert rejected: %s", resp.Rejected[0].Error)
	}
	return nil
}

// Wait waits for every sensor goroutine to end (after ctx is cancelled).
func (f *Fleet) Wait() { f.wg.Wait() }
