package action

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// netnsChildEnv marks the re-executed test binary that runs inside a fresh
// network namespace, so the real host is never isolated.
const netnsChildEnv = "TILLWATCH_ACTION_NETNS_CHILD"

// inNetNS runs the test named name again in a child process started in a
// new network namespace (CLONE_NEWNET) and reports its outcome. It returns
// true in the child, where the caller runs the body. Re-executing is the
// robust way with Go: every thread of the child is in the namespace.
func inNetNS(t *testing.T, name string) bool {
	t.Helper()
	if os.Getenv(netnsChildEnv) == name {
		return true
	}
	requireRoot(t)
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1", "-test.v", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), netnsChildEnv+"="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if m := regexp.MustCompile(`(?m)^\s+\S+\.go:\d+: (SKIP: .*)$`).FindSubmatch(out); m != nil && strings.Contains(string(out), "--- SKIP") {
		t.Skip(string(m[1]))
	}
	if err != nil {
		t.Fatalf("child in a new network namespace failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("child did not run %s:\n%s", name, out)
	}
	t.Logf("child in a new network namespace:\n%s", out)
	return false
}

// loopbackUp brings lo up in the new namespace (it starts down).
func loopbackUp(t *testing.T) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatal(err)
	}
}

// tableState lists table inet tillwatch and its chains with the library.
func tableState(t *testing.T) (present bool, chains map[string]*nftables.Chain, rules map[string]int) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	chains, rules = map[string]*nftables.Chain{}, map[string]int{}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range ts {
		present = present || tb.Name == TableName
	}
	if !present {
		return false, chains, rules
	}
	cs, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range cs {
		if ch.Table.Name != TableName {
			continue
		}
		chains[ch.Name] = ch
		rs, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		rules[ch.Name] = len(rs)
	}
	return true, chains, rules
}

func TestIsolateHost(t *testing.T) {
	if !inNetNS(t, "TestIsolateHost") {
		return
	}
	loopbackUp(t)
	if _, err := isolationPresent(); err != nil {
		t.Skip("SKIP: nf_tables not usable in this kernel: " + err.Error())
	}
	// A veth pair gives real routes: traffic to 10.9.0.0/24 leaves through
	// twv0 to twv1, where nobody answers. Whether the output chain let a
	// TCP SYN through shows in twv0's transmit counter (a dropped UDP send
	// fails with EPERM; a dropped SYN only times out). Static neighbours
	// and no IPv6 keep anything else off the wire.
	traffic := veth(t)
	t.Logf("traffic checks: %v", traffic)
	collector := netip.MustParseAddrPort("10.9.0.3:443")
	dns := netip.MustParseAddr("10.9.0.53")
	state := t.TempDir()
	opts := Options{StateDir: state, CollectorAddrs: []netip.AddrPort{collector}, DNSServers: []netip.Addr{dns}}
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func(network, addr string) error {
		c, err := net.DialTimeout(network, addr, 300*time.Millisecond)
		if err != nil {
			return err
		}
		defer c.Close()
		if network == "udp" {
			_, err = c.Write([]byte("q"))
		}
		return err
	}
	// sent reports whether a TCP connect to addr put a packet on the wire.
	sentOnce := func(addr string) bool {
		before := txPackets(t, "twv0")
		_ = dial("tcp", addr)
		return txPackets(t, "twv0") > before
	}
	// sent expects a packet: a fresh veth may need a moment before it
	// transmits (link and carrier come up asynchronously; on a loaded
	// machine that shows), so it tries for up to 3 s.
	sent := func(addr string) bool {
		for range 10 {
			if sentOnce(addr) {
				return true
			}
			time.Sleep(300 * time.Millisecond)
		}
		return false
	}
	if traffic && !sent("10.9.0.2:80") {
		t.Fatal("before isolation a SYN did not reach the wire: the traffic check does not work here")
	}

	res := e.Run(context.Background(), Request{CommandID: "cmd-iso", Action: ActIsolateHost})
	if res.Status != StatusOK {
		t.Fatalf("isolate-host: %+v", res)
	}
	checkIsolated := func(when string) {
		t.Helper()
		present, chains, rules := tableState(t)
		if !present {
			t.Fatalf("%s: table inet %s missing", when, TableName)
		}
		for name, hook := range map[string]nftables.ChainHook{ChainInput: *nftables.ChainHookInput, ChainOutput: *nftables.ChainHookOutput} {
			ch := chains[name]
			switch {
			case ch == nil:
				t.Fatalf("%s: chain %s missing", when, name)
			case ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop:
				t.Errorf("%s: chain %s policy %v, want drop", when, name, ch.Policy)
			case ch.Hooknum == nil || *ch.Hooknum != hook:
				t.Errorf("%s: chain %s hook %v, want %v", when, name, ch.Hooknum, hook)
			case ch.Priority == nil || *ch.Priority != -10:
				t.Errorf("%s: chain %s priority %v, want filter - 10", when, name, ch.Priority)
			case ch.Type != nftables.ChainTypeFilter:
				t.Errorf("%s: chain %s type %v", when, name, ch.Type)
			}
			// lo, established, collector, 2x DNS, DHCPv4, DHCPv6, ND.
			if rules[name] != 8 {
				t.Errorf("%s: chain %s has %d rules, want 8", when, name, rules[name])
			}
		}
	}
	checkIsolated("after isolate-host")
	if err := dial("tcp", ln.Addr().String()); err != nil {
		t.Errorf("loopback cut by isolation: %v", err)
	}
	if traffic {
		if sentOnce("10.9.0.2:80") {
			t.Error("a SYN to a non-collector address left the host")
		}
		if !sent(collector.String()) {
			t.Error("the SYN to the collector was dropped")
		}
		if sentOnce("10.9.0.3:22") {
			t.Error("a SYN to another port of the collector left the host")
		}
		if err := dial("udp", "10.9.0.53:53"); err != nil {
			t.Errorf("DNS to the configured server: %v", err)
		}
		if err := dial("udp", "10.9.0.54:53"); !errors.Is(err, syscall.EPERM) {
			t.Errorf("DNS to another server: %v, want EPERM from the drop policy", err)
		}
	}
	if res := e.Run(context.Background(), Request{Action: ActIsolateHost}); res.Status != StatusNoop {
		t.Errorf("isolating again: %+v, want noop", res)
	}
	checkIsolated("after isolating again")

	// A restart (and a ruleset flushed meanwhile) re-applies the isolation.
	e.Close()
	if _, err := removeIsolation(); err != nil {
		t.Fatal(err)
	}
	e2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	checkIsolated("after a restart")
	if !e2.Isolated() {
		t.Error("restarted executor does not know it isolated the host")
	}

	if res := e2.Run(context.Background(), Request{Action: ActReleaseHost}); res.Status != StatusOK {
		t.Fatalf("release-host: %+v", res)
	}
	if present, _, _ := tableState(t); present {
		t.Fatal("table still present after release-host")
	}
	if traffic && !sent("10.9.0.2:80") {
		t.Error("after release a SYN is still dropped")
	}
	if res := e2.Run(context.Background(), Request{Action: ActReleaseHost}); res.Status != StatusNoop {
		t.Errorf("releasing again: %+v, want noop", res)
	}
	e2.Close()
	e3, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e3.Close()
	if present, _, _ := tableState(t); present || e3.Isolated() {
		t.Fatal("a released host was isolated again at start")
	}

	// Without a collector address isolation is refused and nothing changes.
	e4, err := New(Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res := e4.Run(context.Background(), Request{Action: ActIsolateHost}); res.Status != StatusRefused {
		t.Fatalf("isolate without a collector: %+v, want refused", res)
	}
	if present, _, _ := tableState(t); present {
		t.Fatal("a refused isolation installed the table")
	}
}

// veth creates twv0 (10.9.0.1/24) and twv1 with static neighbours for
// 10.9.0.2 and 10.9.0.3, using ip(8); false when that is not possible.
func veth(t *testing.T) bool {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Log("no ip(8): checking the ruleset and UDP only")
		return false
	}
	// New interfaces without IPv6: no router solicitations or DAD on the wire.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0o644)
	run := func(args ...string) bool {
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Logf("ip %s: %v: %s: checking the ruleset and UDP only", strings.Join(args, " "), err, out)
			return false
		}
		return true
	}
	if !run("link", "add", "twv0", "type", "veth", "peer", "name", "twv1") ||
		!run("addr", "add", "10.9.0.1/24", "dev", "twv0") || !run("link", "set", "twv0", "up") || !run("link", "set", "twv1", "up") {
		return false
	}
	peer, err := net.InterfaceByName("twv1")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.9.0.2", "10.9.0.3"} {
		if !run("neigh", "replace", a, "lladdr", peer.HardwareAddr.String(), "dev", "twv0", "nud", "permanent") {
			return false
		}
	}
	return true
}

// txPackets reads an interface's transmitted packets from /proc/net/dev,
// which (unlike /sys) shows the reader's network namespace.
func txPackets(t *testing.T, iface string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || name != iface {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 10 {
			t.Fatalf("malformed /proc/net/dev line %q", line)
		}
		n, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Fatalf("%s not in /proc/net/dev", iface)
	return 0
}
