package rulesync

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/rulebundle"
)

func key(t *testing.T) (ed25519.PrivateKey, killswitch.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: "rules"}
}

// bundle builds a real signed bundle holding one YARA file with content.
func bundle(t *testing.T, priv ed25519.PrivateKey, serial int64, content string) []byte {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "yara"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "yara", "r.yar"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	b, _, err := rulebundle.Build(dir, serial, "test", priv, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type recorded struct {
	mu      sync.Mutex
	applied []int64
	alerts  []event.Event
}

func (r *recorded) options(state string, keys []killswitch.PublicKey) Options {
	return Options{
		Keys: keys, StateDir: state,
		Validate: func(dir string) error {
			b, err := os.ReadFile(filepath.Join(dir, "yara", "r.yar"))
			if err != nil {
				return err
			}
			if string(b) == "broken" {
				return errors.New("yara: syntax error")
			}
			return nil
		},
		Applied: func(m rulebundle.Manifest) { r.mu.Lock(); r.applied = append(r.applied, m.Serial); r.mu.Unlock() },
		Emit:    func(ev event.Event) { r.mu.Lock(); r.alerts = append(r.alerts, ev); r.mu.Unlock() },
	}
}

func (r *recorded) take() ([]int64, []event.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, e := r.applied, r.alerts
	r.applied, r.alerts = nil, nil
	return a, e
}

func TestApplyVerifiesAndRefusesDowngrades(t *testing.T) {
	priv, pub := key(t)
	stranger, _ := key(t)
	state := t.TempDir()
	rec := &recorded{}
	s, err := New(rec.options(state, []killswitch.PublicKey{pub}))
	if err != nil {
		t.Fatal(err)
	}
	if cur, dir := s.Current(); cur.Serial != 0 || dir != "" {
		t.Fatalf("fresh state: %+v %q", cur, dir)
	}
	if err := s.Apply(bundle(t, priv, 3, "rule three")); err != nil {
		t.Fatal(err)
	}
	cur, dir := s.Current()
	if b, err := os.ReadFile(filepath.Join(dir, "yara", "r.yar")); cur.Serial != 3 || err != nil || string(b) != "rule three" {
		t.Fatalf("after serial 3: %+v, %q %v", cur, b, err)
	}
	if applied, alerts := rec.take(); len(applied) != 1 || len(alerts) != 0 {
		t.Fatalf("applied %v, alerts %d", applied, len(alerts))
	}

	refused := []struct {
		name string
		b    []byte
	}{
		{"downgrade", bundle(t, priv, 2, "rule two")},
		{"unpinned key", bundle(t, stranger, 9, "rule nine")},
		{"rules that do not load", bundle(t, priv, 4, "broken")},
		{"garbage", []byte(`{"manifest":"AAAA"}`)},
	}
	for _, r := range refused {
		if err := s.Apply(r.b); err == nil {
			t.Fatalf("%s: applied", r.name)
		}
		applied, alerts := rec.take()
		if len(applied) != 0 || len(alerts) != 1 || alerts[0].Rule.ID != RuleRefused {
			t.Fatalf("%s: applied %v, %d alerts", r.name, applied, len(alerts))
		}
		if cur, _ := s.Current(); cur.Serial != 3 {
			t.Fatalf("%s changed the running bundle to %d", r.name, cur.Serial)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "rules", "4")); err == nil {
		t.Fatal("a bundle that does not load was left installed")
	}

	// Restart: the state survives; a downgrade the operator allows applies.
	s2, err := New(rec.options(state, []killswitch.PublicKey{pub}))
	if err != nil {
		t.Fatal(err)
	}
	if cur, _ := s2.Current(); cur.Serial != 3 {
		t.Fatalf("after restart: %+v", cur)
	}
	opts := rec.options(state, []killswitch.PublicKey{pub})
	opts.AllowDowngrade = true
	s3, _ := New(opts)
	if err := s3.Apply(bundle(t, priv, 2, "rule two")); err != nil {
		t.Fatalf("allowed downgrade: %v", err)
	}
	if cur, _ := s3.Current(); cur.Serial != 2 {
		t.Fatalf("allowed downgrade not applied: %+v", cur)
	}
	// The replaced bundle stays as the fallback; the one before it goes.
	if c := s3.Candidates(); len(c) != 2 || c[0].Serial != 2 || c[1].Serial != 3 || c[1].Dir != filepath.Join(state, "rules", "3") {
		t.Fatalf("candidates after 3 -> 2: %+v", c)
	}
	if err := s3.Apply(bundle(t, priv, 6, "rule six")); err != nil {
		t.Fatal(err)
	}
	if c := s3.Candidates(); len(c) != 2 || c[0].Serial != 6 || c[1].Serial != 2 {
		t.Fatalf("candidates after 2 -> 6: %+v", c)
	}
	if _, err := os.Stat(filepath.Join(state, "rules", "3")); err == nil {
		t.Fatal("the bundle before the previous one was not removed")
	}
	if _, err := os.Stat(filepath.Join(state, "rules", "2")); err != nil {
		t.Fatalf("the previous bundle's folder was removed: %v", err)
	}
	if err := os.WriteFile(filepath.Join(state, "rules", "current.json"), []byte(`{"serial":6,"dir":"6","previous":"../../etc"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(rec.options(state, nil)); err == nil {
		t.Fatal("a previous bundle outside the rules folder was accepted")
	}

	if err := os.WriteFile(filepath.Join(state, "rules", "current.json"), []byte(`{"serial":5,"dir":"../../etc"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(rec.options(state, nil)); err == nil {
		t.Fatal("a state file pointing outside the rules folder was accepted")
	}
}

type fetcher struct {
	mu    sync.Mutex
	calls []int64
	b     []byte
}

func (f *fetcher) FetchRules(_ context.Context, have int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, have)
	return f.b, nil
}

// TestRunFetchesOnceOnAnOffer: an offered serial is fetched with the
// running one as have, applied once; a refused serial is not fetched again.
func TestRunFetchesOnceOnAnOffer(t *testing.T) {
	priv, pub := key(t)
	rec := &recorded{}
	opts := rec.options(t.TempDir(), []killswitch.PublicKey{pub})
	f := &fetcher{b: bundle(t, priv, 5, "rule five")}
	opts.Fetcher = f
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	s.Offer(5)
	waitFor(t, func() bool { cur, _ := s.Current(); return cur.Serial == 5 })
	s.Offer(5) // current: nothing to do
	f.mu.Lock()
	f.b = bundle(t, priv, 6, "broken")
	f.mu.Unlock()
	s.Offer(6)
	waitFor(t, func() bool { _, alerts := rec.take(); return len(alerts) == 1 })
	s.Offer(6)
	time.Sleep(100 * time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 2 || f.calls[0] != 0 || f.calls[1] != 5 {
		t.Fatalf("fetches %v, want [0 5]: once per new serial, a refused one not again", f.calls)
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
