package proctree

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// clock is a per-test fake clock; tests never share one.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 5, 1, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2025, 5, 1, 8, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func proc(pid, ppid, startSec int, name string) Proc {
	return Proc{PID: pid, PPID: ppid, Start: at(startSec), Name: name, Executable: "/bin/" + name, UID: 0}
}

func pids(ps []Proc) []int {
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.PID)
	}
	return out
}

// op is one step applied to a table in a scenario.
type op func(t *Table, c *clock)

func upsert(p Proc) op { return func(t *Table, _ *clock) { t.Upsert(p) } }
func fork(parent, child, sec int) op {
	return func(t *Table, _ *clock) { t.Fork(parent, child, at(sec)) }
}
func exit(pid, sec, code int) op {
	return func(t *Table, _ *clock) { t.Exit(pid, at(sec), code) }
}
func advance(d time.Duration) op { return func(_ *Table, c *clock) { c.Advance(d) } }

// chain is init(1) <- agent(100) <- shell(200) <- payload(300).
var chain = []op{
	upsert(proc(1, 0, 0, "init")),
	upsert(proc(100, 1, 10, "agent")),
	upsert(proc(200, 100, 20, "sh")),
	upsert(proc(300, 200, 30, "payload")),
}

func TestAncestry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ops  []op
		pid  int
		max  int
		want []int
	}{
		{name: "full chain nearest first", ops: chain, pid: 300, want: []int{200, 100, 1}},
		{name: "max bounds the chain", ops: chain, pid: 300, max: 2, want: []int{200, 100}},
		{name: "pid 1 has no ancestors", ops: chain, pid: 1, want: nil},
		{name: "unknown pid", ops: chain, pid: 999, want: nil},
		{
			name: "exited parents stay in the chain",
			ops:  append(slices.Clone(chain), exit(200, 31, 0), exit(100, 32, 0)),
			pid:  300, want: []int{200, 100, 1},
		},
		{
			name: "chain stops at unknown parent",
			ops:  []op{upsert(proc(300, 200, 30, "payload")), upsert(proc(1, 0, 0, "init"))},
			pid:  300, want: nil,
		},
		{
			name: "parent pid reused after exit: recorded parent start differs",
			ops: append(slices.Clone(chain),
				exit(200, 31, 0),
				upsert(proc(200, 1, 25, "impostor")), // stale: starts before the known 200, ignored
				upsert(proc(200, 1, 500, "reused")),  // real reuse: replaces the exited sh
			),
			pid: 300, want: nil,
		},
		{
			name: "parent recorded after the child and started later: reuse",
			ops: []op{
				upsert(proc(1, 0, 0, "init")),
				upsert(proc(300, 200, 30, "payload")), // 200 unknown: no recorded parent start
				upsert(proc(200, 1, 90, "later")),
			},
			pid: 300, want: nil,
		},
		{
			name: "two-process cycle terminates",
			ops: []op{
				upsert(Proc{PID: 10, PPID: 11, Name: "a"}),
				upsert(Proc{PID: 11, PPID: 10, Name: "b"}),
			},
			pid: 10, want: []int{11},
		},
		{
			name: "self parent terminates",
			ops:  []op{upsert(Proc{PID: 10, PPID: 10, Name: "a"})},
			pid:  10, want: nil,
		},
		{
			name: "long cycle without starts terminates with max 0",
			ops: func() []op {
				var ops []op
				for i := 1; i <= 50; i++ {
					ops = append(ops, upsert(Proc{PID: 1000 + i, PPID: 1000 + (i % 50) + 1, Name: "x"}))
				}
				return ops
			}(),
			pid: 1001,
			want: func() []int {
				var w []int
				for i := 2; i <= 50; i++ {
					w = append(w, 1000+i)
				}
				return w
			}(),
		},
		{
			name: "fork keeps a short-lived child's parent",
			ops:  append(slices.Clone(chain), fork(300, 301, 40), exit(301, 41, 0), exit(300, 42, 0)),
			pid:  301, want: []int{300, 200, 100, 1},
		},
		{
			name: "exec upsert after the parent exited keeps the forking parent",
			ops: append(slices.Clone(chain),
				fork(200, 400, 50),
				exit(200, 51, 0),
				// /proc now shows the orphan reparented to init.
				upsert(Proc{PID: 400, PPID: 1, Start: at(50).Add(5 * time.Millisecond), Name: "dropper"}),
			),
			pid: 400, want: []int{200, 100, 1},
		},
		{
			name: "parent retained until retention expires",
			ops: append(slices.Clone(chain),
				exit(200, 31, 0), advance(9*time.Minute)),
			pid: 300, want: []int{200, 100, 1},
		},
		{
			name: "parent gone after retention",
			ops: append(slices.Clone(chain),
				exit(200, 31, 0), advance(11*time.Minute)),
			pid: 300, want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			tab := New(Options{Now: c.Now})
			for _, o := range tc.ops {
				o(tab, c)
			}
			got := pids(tab.Ancestry(tc.pid, tc.max))
			if len(got) == 0 {
				got = nil
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Ancestry(%d, %d) = %v, want %v", tc.pid, tc.max, got, tc.want)
			}
		})
	}
}

func TestAncestryReportsExitedState(t *testing.T) {
	t.Parallel()
	c := newClock()
	tab := New(Options{Now: c.Now})
	for _, o := range chain {
		o(tab, c)
	}
	tab.Exit(200, at(31), 3)
	got := tab.Ancestry(300, 1)
	if len(got) != 1 || !got[0].Exited || got[0].ExitCode != 3 || !got[0].End.Equal(at(31)) || got[0].Name != "sh" {
		t.Fatalf("Ancestry(300, 1) = %+v, want exited sh with code 3", got)
	}
}

func TestUpsert(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ops  []op
		pid  int
		want Proc
		ok   bool
	}{
		{
			name: "insert",
			ops:  []op{upsert(proc(5, 1, 1, "a"))},
			pid:  5, ok: true, want: proc(5, 1, 1, "a"),
		},
		{
			name: "same process: new image replaces the old one whole, earliest start kept",
			ops: []op{
				upsert(proc(5, 1, 1, "a")),
				upsert(Proc{PID: 5, Start: at(1).Add(10 * time.Millisecond), Name: "b", CommandLine: "b -x", Args: []string{"b", "-x"}, UID: UnknownUID}),
			},
			pid: 5, ok: true,
			want: Proc{PID: 5, PPID: 1, Start: at(1), Name: "b", CommandLine: "b -x", Args: []string{"b", "-x"}},
		},
		{
			name: "unknown start updates the running process",
			ops:  []op{upsert(proc(5, 1, 1, "a")), upsert(Proc{PID: 5, Name: "b", UID: 1000, User: "pos"})},
			pid:  5, ok: true,
			want: Proc{PID: 5, PPID: 1, Start: at(1), Name: "b", UID: 1000, User: "pos"},
		},
		{
			name: "no image keeps the old one",
			ops:  []op{upsert(proc(5, 1, 1, "a")), upsert(Proc{PID: 5, Cwd: "/srv", UID: UnknownUID})},
			pid:  5, ok: true,
			want: Proc{PID: 5, PPID: 1, Start: at(1), Name: "a", Executable: "/bin/a", Cwd: "/srv"},
		},
		{
			name: "pid reuse replaces a running entry",
			ops:  []op{upsert(proc(5, 1, 1, "a")), upsert(proc(5, 2, 100, "b"))},
			pid:  5, ok: true, want: proc(5, 2, 100, "b"),
		},
		{
			name: "pid reuse replaces an exited entry",
			ops:  []op{upsert(proc(5, 1, 1, "a")), exit(5, 2, 1), upsert(proc(5, 2, 100, "b"))},
			pid:  5, ok: true, want: proc(5, 2, 100, "b"),
		},
		{
			name: "unknown start after exit is a new process",
			ops:  []op{upsert(proc(5, 1, 1, "a")), exit(5, 2, 1), upsert(Proc{PID: 5, PPID: 3, Name: "b"})},
			pid:  5, ok: true, want: Proc{PID: 5, PPID: 3, Name: "b"},
		},
		{
			name: "late details of an exited process keep it exited",
			ops:  []op{fork(1, 5, 1), exit(5, 2, 9), upsert(proc(5, 1, 1, "a"))},
			pid:  5, ok: true,
			want: Proc{PID: 5, PPID: 1, Start: at(1), Name: "a", Executable: "/bin/a", Exited: true, End: at(2), ExitCode: 9},
		},
		{
			name: "stale upsert is ignored",
			ops:  []op{upsert(proc(5, 1, 100, "new")), upsert(proc(5, 1, 1, "old"))},
			pid:  5, ok: true, want: proc(5, 1, 100, "new"),
		},
		{
			name: "fork copies the parent image",
			ops:  []op{upsert(proc(5, 1, 1, "sh")), fork(5, 6, 2)},
			pid:  6, ok: true, want: Proc{PID: 6, PPID: 5, Start: at(2), Name: "sh", Executable: "/bin/sh"},
		},
		{
			name: "fork of unknown parent",
			ops:  []op{fork(5, 6, 2)},
			pid:  6, ok: true, want: Proc{PID: 6, PPID: 5, Start: at(2), UID: UnknownUID},
		},
		{
			name: "fork replaces a stale running entry",
			ops:  []op{upsert(proc(6, 1, 1, "old")), fork(5, 6, 50)},
			pid:  6, ok: true, want: Proc{PID: 6, PPID: 5, Start: at(50), UID: UnknownUID},
		},
		{
			name: "exit of unknown pid is ignored",
			ops:  []op{exit(7, 1, 0)},
			pid:  7, ok: false,
		},
		{
			name: "second exit is ignored",
			ops:  []op{upsert(proc(5, 1, 1, "a")), exit(5, 2, 1), exit(5, 3, 2)},
			pid:  5, ok: true,
			want: Proc{PID: 5, PPID: 1, Start: at(1), Name: "a", Executable: "/bin/a", Exited: true, End: at(2), ExitCode: 1},
		},
		{
			name: "invalid pids are ignored",
			ops:  []op{upsert(Proc{PID: 0, Name: "x"}), upsert(Proc{PID: -4, Name: "x"}), fork(1, 0, 1)},
			pid:  0, ok: false,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			tab := New(Options{Now: c.Now})
			for _, o := range tc.ops {
				o(tab, c)
			}
			got, ok := tab.Get(tc.pid)
			if ok != tc.ok {
				t.Fatalf("Get(%d) ok = %v, want %v", tc.pid, ok, tc.ok)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tc.want) {
				t.Fatalf("Get(%d) =\n %+v\nwant\n %+v", tc.pid, got, tc.want)
			}
		})
	}
}

func TestRetention(t *testing.T) {
	t.Parallel()
	c := newClock()
	tab := New(Options{Now: c.Now, Retain: time.Minute})
	tab.Upsert(proc(1, 0, 0, "init"))
	tab.Upsert(proc(2, 1, 1, "a"))
	tab.Upsert(proc(3, 1, 1, "b"))
	tab.Exit(2, at(2), 0)
	c.Advance(30 * time.Second)
	tab.Exit(3, at(3), 0)
	if n := tab.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3 while within retention", n)
	}
	c.Advance(31 * time.Second) // 2 is 61s past exit, 3 is 31s
	if _, ok := tab.Get(2); ok {
		t.Fatal("pid 2 still present after retention")
	}
	if _, ok := tab.Get(3); !ok {
		t.Fatal("pid 3 evicted before its retention")
	}
	c.Advance(time.Hour)
	if n := tab.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1 (only the running init)", n)
	}
	if tab.Evicted() != 0 {
		t.Fatalf("Evicted = %d, want 0: ageing out is not eviction", tab.Evicted())
	}
}

func TestMaxEntries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		ops         []op
		wantGone    []int
		wantPresent []int
	}{
		{
			name: "oldest exited goes first",
			ops: []op{
				upsert(proc(1, 0, 0, "init")), upsert(proc(2, 1, 1, "a")), upsert(proc(3, 1, 1, "b")),
				exit(3, 2, 0), advance(time.Second), exit(2, 3, 0),
				upsert(proc(4, 1, 4, "c")),
			},
			wantGone: []int{3}, wantPresent: []int{1, 2, 4},
		},
		{
			name: "all running: one is dropped to keep the bound",
			ops: []op{
				upsert(proc(1, 0, 0, "init")), upsert(proc(2, 1, 1, "a")), upsert(proc(3, 1, 1, "b")),
				upsert(proc(4, 1, 4, "c")),
			},
			wantPresent: []int{4},
		},
		{
			name: "updating a known pid needs no room",
			ops: []op{
				upsert(proc(1, 0, 0, "init")), upsert(proc(2, 1, 1, "a")), upsert(proc(3, 1, 1, "b")),
				upsert(proc(3, 1, 1, "b2")),
			},
			wantPresent: []int{1, 2, 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newClock()
			tab := New(Options{Now: c.Now, MaxEntries: 3})
			for _, o := range tc.ops {
				o(tab, c)
			}
			if n := tab.Len(); n > 3 {
				t.Fatalf("Len = %d, exceeds MaxEntries 3", n)
			}
			for _, pid := range tc.wantGone {
				if _, ok := tab.Get(pid); ok {
					t.Errorf("pid %d present, want evicted", pid)
				}
			}
			for _, pid := range tc.wantPresent {
				if _, ok := tab.Get(pid); !ok {
					t.Errorf("pid %d evicted, want present", pid)
				}
			}
		})
	}
}

// TestChurnStaysBounded drives heavy pid reuse and checks that neither the
// map nor the exit heap (which may hold stale items) grows without bound.
func TestChurnStaysBounded(t *testing.T) {
	t.Parallel()
	c := newClock()
	tab := New(Options{Now: c.Now, MaxEntries: 100})
	for i := range 20_000 {
		pid := 2 + i%150
		tab.Fork(1, pid, at(i))
		tab.Exit(pid, at(i), 0)
		if i%1000 == 0 {
			c.Advance(time.Second)
		}
	}
	tab.mu.Lock()
	n, h := len(tab.entries), len(tab.exited)
	tab.mu.Unlock()
	if n > 100 || h > 2*100+64+1 {
		t.Fatalf("entries = %d, heap = %d; want <= 100 and <= 265", n, h)
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	tab := New(Options{MaxEntries: 500, Retain: time.Millisecond})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range 2000 {
				pid := 1 + r.IntN(1000)
				switch r.IntN(6) {
				case 0:
					tab.Upsert(Proc{PID: pid, PPID: r.IntN(1000), Start: time.Now(), Name: "p", Args: []string{"p"}})
				case 1:
					tab.Fork(r.IntN(1000), pid, time.Now())
				case 2:
					tab.Exit(pid, time.Now(), 0)
				case 3:
					if p, ok := tab.Get(pid); ok && p.PID != pid {
						t.Errorf("Get(%d) returned pid %d", pid, p.PID)
					}
				case 4:
					if a := tab.Ancestry(pid, 0); len(a) > 1000 {
						t.Errorf("Ancestry(%d) has %d entries", pid, len(a))
					}
				case 5:
					if n := tab.Len(); n > 500 {
						t.Errorf("Len = %d > MaxEntries", n)
					}
					_ = tab.Running()
				}
			}
		}()
	}
	wg.Wait()
}
