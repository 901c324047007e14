package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeGen is a credentials generation a test moves by hand.
type fakeGen struct {
	gen int64
	err error
}

func (f *fakeGen) read(context.Context) (int64, error) { return f.gen, f.err }

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time       { return c.t }
func (c *fakeClock) add(d time.Duration)  { c.t = c.t.Add(d) }
func newClock() *fakeClock                { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (f *fakeGen) set(g int64, err error) { f.gen, f.err = g, err }
func remember(c *CredentialCache, h string) {
	s, _ := c.Stamp()
	c.Put(h, s, "agent", "h1", time.Time{})
}

func TestCredentialCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name string
		// change happens after the credential was remembered; hit is
		// whether it is still used.
		change func(c *CredentialCache, g *fakeGen, clk *fakeClock)
		hit    bool
	}{
		{"unchanged, polled", func(c *CredentialCache, g *fakeGen, clk *fakeClock) { clk.add(CredentialPoll); c.Poll(ctx) }, true},
		{"generation moved", func(c *CredentialCache, g *fakeGen, clk *fakeClock) { g.set(8, nil); c.Poll(ctx) }, false},
		{"own change", func(c *CredentialCache, g *fakeGen, clk *fakeClock) { c.Forget() }, false},
		{"generation unread for the window", func(c *CredentialCache, g *fakeGen, clk *fakeClock) {
			g.set(7, errors.New("store down"))
			for range 5 {
				clk.add(CredentialPoll)
				c.Poll(ctx)
			}
		}, false},
		{"just inside the window", func(c *CredentialCache, g *fakeGen, clk *fakeClock) { clk.add(CredentialWindow - time.Millisecond) }, true},
		{"older than the max age, polled", func(c *CredentialCache, g *fakeGen, clk *fakeClock) {
			for range int(CredentialMaxAge / CredentialPoll) {
				clk.add(CredentialPoll)
				c.Poll(ctx)
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g, clk := &fakeGen{gen: 7}, newClock()
			c := NewCredentialCache(g.read, clk.now)
			if _, _, ok := c.Get("h"); ok {
				t.Fatal("hit before anything was remembered")
			}
			remember(c, "h")
			if _, _, ok := c.Get("h"); ok {
				t.Fatal("remembered before the generation was ever read")
			}
			c.Poll(ctx)
			remember(c, "h")
			if role, host, ok := c.Get("h"); !ok || role != "agent" || host != "h1" {
				t.Fatalf("Get = %q %q %v", role, host, ok)
			}
			tc.change(c, g, clk)
			if _, _, ok := c.Get("h"); ok != tc.hit {
				t.Errorf("hit = %v, want %v", ok, tc.hit)
			}
		})
	}
}

// An answer read while a credential changed is not remembered.
func TestCredentialCacheDropsAnswersReadAcrossAChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g, clk := &fakeGen{gen: 1}, newClock()
	c := NewCredentialCache(g.read, clk.now)
	c.Poll(ctx)

	s, ok := c.Stamp() // Authenticate starts reading the store ...
	g.set(2, nil)      // ... another collector revokes ...
	c.Poll(ctx)        // ... this one sees the bump ...
	c.Put("h", s, "agent", "h1", time.Time{})
	if !ok {
		t.Fatal("stamp not usable after a read")
	}
	if _, _, hit := c.Get("h"); hit {
		t.Error("an answer read before the bump was used after it")
	}

	s, _ = c.Stamp()
	c.Forget() // this collector's own revocation
	c.Put("h", s, "agent", "h1", time.Time{})
	if _, _, hit := c.Get("h"); hit {
		t.Error("an answer read before this collector's own change was used after it")
	}
}

func TestCredentialCacheChecksExpiry(t *testing.T) {
	t.Parallel()
	g, clk := &fakeGen{gen: 1}, newClock()
	c := NewCredentialCache(g.read, clk.now)
	c.Poll(context.Background())
	s, _ := c.Stamp()
	c.Put("h", s, "agent", "h1", clk.now().Add(time.Second))
	if _, _, ok := c.Get("h"); !ok {
		t.Fatal("miss before expiry")
	}
	clk.add(time.Second)
	if _, _, ok := c.Get("h"); ok {
		t.Error("an expired credential was used")
	}
}
