package killswitch

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)

type keyPair struct {
	pub  PublicKey
	priv ed25519.PrivateKey
}

func newKey(t testing.TB, role, name string) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{PublicKey{Role: role, Key: pub, Name: name, ID: KeyID(pub)}, priv}
}

func baseCommand(action string, targets Targets) Command {
	return Command{
		V: Version, ID: "cmd-0123456789", IssuedAt: t0, NotBefore: t0, NotAfter: t0.Add(time.Hour),
		Issuer: "collector", Targets: targets, Action: action,
	}
}

func signWith(t testing.TB, c Command, keys ...keyPair) Signed {
	t.Helper()
	p, err := c.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	s := Signed{Payload: p}
	for _, k := range keys {
		s.AddSignature(Sign(k.priv, p))
	}
	return s
}

// TestVerifyMatrix is the bad-command matrix on the verifier: every way a
// command can be wrong is refused with its own reason, and the good ones
// pass.
func TestVerifyMatrix(t *testing.T) {
	coll := newKey(t, RoleCollector, "collector")
	alice := newKey(t, RoleResponder, "alice")
	bob := newKey(t, RoleResponder, "bob")
	mallory := newKey(t, RoleResponder, "mallory") // not pinned
	ks, err := NewKeySet(coll.pub, alice.pub, bob.pub)
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Keys: ks, HostID: "till-001", Labels: map[string]string{"store": "s1"}, Now: func() time.Time { return t0.Add(time.Minute) }}
	me := Targets{Hosts: []string{"till-001"}}
	six := Targets{Hosts: []string{"till-001", "till-002", "till-003", "till-004", "till-005", "till-006"}}

	tamper := func(s Signed) Signed {
		s.Payload = bytes.Replace(s.Payload, []byte("disable-rmm"), []byte("enable-rmm!"), 1)
		return s
	}
	cases := []struct {
		name   string
		signed func() Signed
		want   string // refusal reason, "" for accepted
	}{
		{"protective by collector, all hosts", func() Signed { return signWith(t, baseCommand(ActionDisableRMM, Targets{All: true}), coll) }, ""},
		{"scan by one responder, label", func() Signed {
			return signWith(t, baseCommand(ActionScan, Targets{Labels: map[string]string{"store": "s1"}}), alice)
		}, ""},
		{"bounded on one host by collector", func() Signed { return signWith(t, baseCommand(ActionIsolateHost, me), coll) }, RefuseUnderApproved},
		{"bounded on one host by one responder", func() Signed { return signWith(t, baseCommand(ActionIsolateHost, me), alice) }, ""},
		{"bounded on six hosts by collector", func() Signed { return signWith(t, baseCommand(ActionIsolateHost, six), coll) }, RefuseUnderApproved},
		{"bounded on six hosts, two responders", func() Signed { return signWith(t, baseCommand(ActionIsolateHost, six), alice, bob) }, ""},
		{"bounded on all by collector", func() Signed { return signWith(t, baseCommand(ActionKillProcess, Targets{All: true}), coll) }, RefuseUnderApproved},
		{"reversing by collector", func() Signed { return signWith(t, baseCommand(ActionEnableRMM, me), coll) }, RefuseUnderApproved},
		{"reversing by one responder", func() Signed { return signWith(t, baseCommand(ActionReleaseHost, me), alice) }, RefuseUnderApproved},
		{"reversing by collector and one responder", func() Signed { return signWith(t, baseCommand(ActionReleaseHost, me), coll, alice) }, RefuseUnderApproved},
		{"reversing by one responder twice", func() Signed {
			s := signWith(t, baseCommand(ActionReleaseHost, me), alice)
			s.Signatures = append(s.Signatures, s.Signatures[0])
			return s
		}, RefuseUnderApproved},
		{"reversing by two responders", func() Signed { return signWith(t, baseCommand(ActionReleaseHost, me), alice, bob) }, ""},
		{"unsigned", func() Signed { return signWith(t, baseCommand(ActionDisableRMM, me)) }, RefuseUnsigned},
		{"unpinned key", func() Signed { return signWith(t, baseCommand(ActionDisableRMM, me), mallory) }, RefuseUnpinnedKey},
		{"pinned id, forged signature", func() Signed {
			s := signWith(t, baseCommand(ActionDisableRMM, me), mallory)
			s.Signatures[0].KeyID = coll.pub.ID
			return s
		}, RefuseBadSignature},
		{"tampered payload", func() Signed { return tamper(signWith(t, baseCommand(ActionDisableRMM, me), coll)) }, RefuseBadSignature},
		{"valid plus forged", func() Signed {
			s := signWith(t, baseCommand(ActionReleaseHost, me), alice)
			s.Signatures = append(s.Signatures, Signature{KeyID: bob.pub.ID, Sig: make([]byte, 64)})
			return s
		}, RefuseBadSignature},
		{"expired", func() Signed {
			c := baseCommand(ActionDisableRMM, me)
			c.IssuedAt, c.NotBefore, c.NotAfter = t0.Add(-2*time.Hour), t0.Add(-2*time.Hour), t0.Add(-time.Hour)
			return signWith(t, c, coll)
		}, RefuseExpired},
		{"not yet valid", func() Signed {
			c := baseCommand(ActionDisableRMM, me)
			c.NotBefore, c.NotAfter = t0.Add(time.Hour), t0.Add(2*time.Hour)
			return signWith(t, c, coll)
		}, RefuseNotYetValid},
		{"within clock skew", func() Signed {
			c := baseCommand(ActionDisableRMM, me)
			c.NotBefore = t0.Add(2 * time.Minute)
			return signWith(t, c, coll)
		}, ""},
		{"misaddressed host", func() Signed {
			return signWith(t, baseCommand(ActionDisableRMM, Targets{Hosts: []string{"till-002"}}), coll)
		}, RefuseMisaddressed},
		{"misaddressed label", func() Signed {
			return signWith(t, baseCommand(ActionDisableRMM, Targets{Labels: map[string]string{"store": "s2"}}), coll)
		}, RefuseMisaddressed},
		{"unknown action", func() Signed { return signWith(t, baseCommand("format-disk", me), coll) }, RefuseUnknownAction},
		{"non-canonical payload", func() Signed {
			s := signWith(t, baseCommand(ActionDisableRMM, me), coll)
			s.Payload = append([]byte(" "), s.Payload...)
			s.Signatures = []Signature{Sign(coll.priv, s.Payload)}
			return s
		}, RefuseMalformed},
		{"duplicate key smuggling", func() Signed {
			s := signWith(t, baseCommand(ActionDisableRMM, me), coll)
			s.Payload = bytes.Replace(s.Payload, []byte(`"action":"disable-rmm"`), []byte(`"action":"disable-rmm","action":"disable-rmm"`), 1)
			s.Signatures = []Signature{Sign(coll.priv, s.Payload)}
			return s
		}, RefuseMalformed},
		{"unknown field", func() Signed {
			s := signWith(t, baseCommand(ActionDisableRMM, me), coll)
			s.Payload = bytes.Replace(s.Payload, []byte(`{"v":1`), []byte(`{"shell":"rm -rf /","v":1`), 1)
			s.Signatures = []Signature{Sign(coll.priv, s.Payload)}
			return s
		}, RefuseMalformed},
		{"lifetime too long", func() Signed {
			c := baseCommand(ActionDisableRMM, me)
			c.NotAfter = t0.Add(MaxLifetime + time.Hour)
			return signWith(t, c, coll)
		}, RefuseMalformed},
		{"retired key", func() Signed {
			old := newKey(t, RoleCollector, "old")
			old.pub.NotAfter = t0
			if err := ks.Add(old.pub); err != nil {
				t.Fatal(err)
			}
			return signWith(t, baseCommand(ActionDisableRMM, me), old)
		}, RefuseUnpinnedKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.signed()
			c, _, err := v.Verify(&s)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if c.ID != "cmd-0123456789" {
					t.Fatalf("parsed id %q", c.ID)
				}
				return
			}
			re, ok := IsRefused(err)
			if !ok {
				t.Fatalf("want refusal %s, got %v", tc.want, err)
			}
			if re.Reason != tc.want {
				t.Fatalf("refusal %s (%s), want %s", re.Reason, re.Detail, tc.want)
			}
			if strings.Contains(re.Error(), "\n") {
				t.Fatalf("refusal is not one line: %q", re.Error())
			}
		})
	}
}

// TestReplayCache: an identical redelivery returns the recorded result;
// another payload under a used id is a replay; both survive a restart; a
// corrupt cache is an error, not amnesia.
func TestReplayCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replay.json")
	now := t0
	rc, err := OpenReplayCache(path, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	c := baseCommand(ActionDisableRMM, Targets{All: true})
	p, _ := c.Canonical()
	if prev, err := rc.Check(&c, p); prev != nil || err != nil {
		t.Fatalf("fresh id: %v %v", prev, err)
	}
	if err := rc.Record(&c, p, Result{Status: StatusStarted}); err != nil {
		t.Fatal(err)
	}
	if prev, err := rc.Check(&c, p); prev != nil || err != nil {
		t.Fatalf("started command must run again (idempotent): %v %v", prev, err)
	}
	if err := rc.Record(&c, p, Result{Status: StatusOK, Affected: []string{"42"}}); err != nil {
		t.Fatal(err)
	}

	rc, err = OpenReplayCache(path, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	prev, err := rc.Check(&c, p)
	if err != nil || prev == nil || prev.Status != StatusOK || prev.Affected[0] != "42" {
		t.Fatalf("redelivery after restart: %+v %v", prev, err)
	}
	other := c
	other.Action = ActionScan
	op, _ := other.Canonical()
	if _, err := rc.Check(&other, op); err == nil {
		t.Fatal("a second command under a used id was not a replay")
	} else if re, _ := IsRefused(err); re.Reason != RefuseReplayed {
		t.Fatalf("reason %s", re.Reason)
	}

	// Entries expire with their command.
	now = c.NotAfter.Add(ClockSkew + time.Second)
	c2 := baseCommand(ActionScan, Targets{All: true})
	c2.ID = "cmd-second-one"
	c2.NotAfter = now.Add(time.Hour)
	p2, _ := c2.Canonical()
	if err := rc.Record(&c2, p2, Result{Status: StatusOK}); err != nil {
		t.Fatal(err)
	}
	if rc.Len() != 1 {
		t.Fatalf("%d entries after expiry, want 1", rc.Len())
	}

	if err := os.WriteFile(path, []byte("{torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReplayCache(path, nil); err == nil {
		t.Fatal("corrupt replay cache opened as empty")
	}

	// "null" is valid JSON for no map at all: an empty cache that can
	// record (it panicked at the first Record).
	if err := os.WriteFile(path, []byte("null"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err = OpenReplayCache(path, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Record(&c, p, Result{Status: StatusOK}); err != nil || rc.Len() != 1 {
		t.Fatalf("record into a null cache: %v, %d entries", err, rc.Len())
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	id, err := GenerateKey(dir, "killswitch")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateKey(dir, "killswitch"); err == nil {
		t.Fatal("overwrote an existing key")
	}
	priv, err := LoadPrivateKey(filepath.Join(dir, "killswitch.key"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(filepath.Join(dir, "killswitch.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if KeyID(pub) != id || !pub.Equal(priv.Public()) {
		t.Fatal("key files do not match")
	}
	if err := os.Chmod(filepath.Join(dir, "killswitch.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPrivateKey(filepath.Join(dir, "killswitch.key")); err == nil {
		t.Fatal("loaded a world-readable private key")
	}
	if _, err := ParsePublicKey([]byte("not pem")); err == nil {
		t.Fatal("parsed garbage as a key")
	}
	ks, _ := NewKeySet()
	if err := ks.Add(PublicKey{Role: RoleCollector, Key: pub}); err != nil {
		t.Fatal(err)
	}
	if err := ks.Add(PublicKey{Role: RoleResponder, Key: pub}); err == nil {
		t.Fatal("one key pinned under two roles")
	}
	if err := ks.Add(PublicKey{Role: RoleResponder, Key: pub, ID: "0000000000000000"}); err == nil {
		t.Fatal("accepted a key id that does not match the key")
	}
}

// TestSignedJSON: the envelope survives JSON (what the collector stores and
// serves) with signatures intact.
func TestSignedJSON(t *testing.T) {
	coll := newKey(t, RoleCollector, "c")
	s := signWith(t, baseCommand(ActionScan, Targets{All: true}), coll)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Signed
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	ks, _ := NewKeySet(coll.pub)
	v := &Verifier{Keys: ks, HostID: "h", Now: func() time.Time { return t0 }}
	if _, _, err := v.Verify(&back); err != nil {
		t.Fatal(err)
	}
}

// FuzzVerify: no payload or signature set makes the verifier panic or
// accept something a pinned key did not sign.
func FuzzVerify(f *testing.F) {
	coll := newKey(f, RoleCollector, "c")
	good := signWith(f, baseCommand(ActionDisableRMM, Targets{All: true}), coll)
	gb, _ := json.Marshal(good)
	f.Add(gb)
	f.Add([]byte(`{"payload":"e30=","signatures":[]}`))
	f.Add([]byte(`{"payload":null,"signatures":[{"key_id":"x","sig":"AAAA"}]}`))
	ks, _ := NewKeySet(coll.pub)
	v := &Verifier{Keys: ks, HostID: "h", Now: func() time.Time { return t0 }}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Signed
		if json.Unmarshal(b, &s) != nil {
			return
		}
		c, _, err := v.Verify(&s)
		if err == nil && !bytes.Equal(s.Payload, good.Payload) {
			t.Fatalf("accepted a payload the key never signed: %q (%+v)", s.Payload, c)
		}
	})
}

// FuzzParseCanonical: parsing never panics, and whatever parses re-encodes
// to the same bytes.
func FuzzParseCanonical(f *testing.F) {
	c := baseCommand(ActionKillProcess, Targets{Hosts: []string{"a", "b"}})
	c.Params = map[string]string{"name": "agent.exe", "pid": "42"}
	p, _ := c.Canonical()
	f.Add(p)
	c.Params = map[string]string{"pid": "42", "start_time": "1700000000000"}
	p, _ = c.Canonical()
	f.Add(p)
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCanonical(b)
		if err != nil {
			return
		}
		again, _ := c.Canonical()
		if !bytes.Equal(again, b) {
			t.Fatalf("accepted non-canonical bytes %q", b)
		}
		if _, pid := c.Params["pid"]; pid && c.Action == ActionKillProcess && c.Params["start_time"] == "" {
			t.Fatalf("accepted a pid kill without start_time: %q", b)
		}
	})
}

// TestKillOfReusedPIDWithoutStartTimeRefused: a kill-process by pid alone
// would kill whatever holds that pid when the command runs, days later
// perhaps; the verifier refuses it however many responders signed, and
// accepts the same kill pinned by its start time.
func TestKillOfReusedPIDWithoutStartTimeRefused(t *testing.T) {
	alice := newKey(t, RoleResponder, "alice")
	bob := newKey(t, RoleResponder, "bob")
	ks, err := NewKeySet(alice.pub, bob.pub)
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Keys: ks, HostID: "till-001", Now: func() time.Time { return t0.Add(time.Minute) }}
	c := baseCommand(ActionKillProcess, Targets{Hosts: []string{"till-001"}})
	c.Params = map[string]string{"pid": "4242"}
	if err := c.Validate(); !errors.Is(err, ErrPIDWithoutStart) {
		t.Fatalf("Validate: %v, want ErrPIDWithoutStart", err)
	}
	s := signWith(t, c, alice, bob)
	_, _, err = v.Verify(&s)
	if re, ok := IsRefused(err); !ok || re.Reason != RefuseMalformed || !strings.Contains(re.Detail, "start_time") {
		t.Fatalf("pid kill without start_time: %v, want a malformed refusal naming start_time", err)
	}
	c.Params["start_time"] = "1700000000000"
	s = signWith(t, c, alice, bob)
	if _, _, err := v.Verify(&s); err != nil {
		t.Fatalf("pid kill with start_time refused: %v", err)
	}
}

// TestOneKeyBudgetOnThisHost: the sensor's ledger holds one responder key
// to Policy.BudgetCommands single-key commands on this host per window,
// durably across a restart; other keys keep their own budget and the
// window rolls.
func TestOneKeyBudgetOnThisHost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budget.json")
	now := t0
	clock := func() time.Time { return now }
	p := Policy{BudgetCommands: 3, BudgetWindow: time.Hour}
	l, err := OpenLedger(path, clock)
	if err != nil {
		t.Fatal(err)
	}
	c := baseCommand(ActionKillProcess, Targets{Hosts: []string{"till-001"}})
	for i := range 3 {
		now = now.Add(time.Minute)
		c.ID = fmt.Sprintf("cmd-budget-%d", i)
		if err := l.Charge(&c, []string{"alice"}, p); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
		// A redelivery of the same command after a crash is not charged twice.
		if err := l.Charge(&c, []string{"alice"}, p); err != nil || l.Spent("alice", time.Hour) != i+1 {
			t.Fatalf("command %d charged again: %v, spent %d", i, err, l.Spent("alice", time.Hour))
		}
	}
	c.ID = "cmd-budget-over"
	l, err = OpenLedger(path, clock) // a restart forgets nothing
	if err != nil {
		t.Fatal(err)
	}
	err = l.Charge(&c, []string{"alice"}, p)
	if re, ok := IsRefused(err); !ok || re.Reason != RefuseOverBudget {
		t.Fatalf("fourth command by alice: %v, want over-budget", err)
	}
	if err := l.Charge(&c, []string{"bob"}, p); err != nil {
		t.Fatalf("bob's budget is his own: %v", err)
	}
	now = now.Add(time.Hour - time.Minute) // the first of alice's three left the window
	if err := l.Charge(&c, []string{"alice"}, p); err != nil {
		t.Fatalf("after the window rolled: %v", err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLedger(path, clock); err == nil {
		t.Fatal("a corrupt ledger opened as empty")
	}
}

func TestSingleKey(t *testing.T) {
	p := Policy{}
	kill := baseCommand(ActionKillProcess, Targets{Hosts: []string{"a"}})
	scan := baseCommand(ActionScan, Targets{All: true})
	if k, ok := p.SingleKey(&kill, Signers{Responders: []string{"alice"}}); !ok || len(k) != 1 {
		t.Fatal("one responder on a bounded command is single-key")
	}
	if _, ok := p.SingleKey(&kill, Signers{Responders: []string{"alice", "bob"}}); ok {
		t.Fatal("two responders lift the budget")
	}
	if _, ok := p.SingleKey(&scan, Signers{Collector: []string{"c"}}); ok {
		t.Fatal("a protective command spends no budget")
	}
}

// FuzzOpenLedger: any file content either opens or is an error naming the
// file; what opens can be charged without panicking and round-trips.
func FuzzOpenLedger(f *testing.F) {
	f.Add([]byte(`{"abc":[{"at":"2026-11-30T10:00:00Z","command_id":"cmd-0123456789"}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"k":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`)) // found by the fuzzer: no map at all, and the first charge panicked
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "budget.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := OpenLedger(path, func() time.Time { return t0 })
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		c := baseCommand(ActionKillProcess, Targets{Hosts: []string{"a"}})
		c.ID = "cmd-fuzz-charge"
		for _, e := range l.entries["alice"] {
			if e.CommandID == c.ID {
				return // charged before: Charge is a no-op, TestOneKeyBudgetOnThisHost covers it
			}
		}
		p := Policy{BudgetCommands: 2}
		before := l.Spent("alice", time.Hour)
		err = l.Charge(&c, []string{"alice"}, p)
		if before >= 2 {
			if re, ok := IsRefused(err); !ok || re.Reason != RefuseOverBudget {
				t.Fatalf("spent %d of 2, charge: %v", before, err)
			}
			return
		}
		if err != nil {
			return // e.g. the ledger already holds too many keys
		}
		again, err := OpenLedger(path, func() time.Time { return t0 })
		if err != nil {
			t.Fatalf("a charged ledger does not reopen: %v", err)
		}
		if got := again.Spent("alice", time.Hour); got != before+1 {
			t.Fatalf("spent %d after reopening, want %d", got, before+1)
		}
	})
}
