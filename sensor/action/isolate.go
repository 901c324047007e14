package action

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"
)

// Firewall names (nftables table "inet tillwatch").
const (
	TableName   = "tillwatch"
	ChainInput  = "input"
	ChainOutput = "output"
)

// resolvConfs are read for default DNS servers: the classic file, then
// systemd-resolved's list of upstream servers (the classic file then
// usually names only its 127.0.0.53 stub, which loopback already allows).
var resolvConfs = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}

// defaultDNS returns the non-loopback name servers of the resolv.conf files.
func defaultDNS() []netip.Addr {
	var out []netip.Addr
	for _, f := range resolvConfs {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 2 || fields[0] != "nameserver" {
				continue
			}
			// A zone suffix (fe80::1%eth0) cannot be matched by address.
			a, err := netip.ParseAddr(fields[1])
			if err != nil || a.Zone() != "" || a.IsLoopback() {
				continue
			}
			if a = a.Unmap(); !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
		fh.Close()
	}
	return out
}

// isolate runs isolate-host.
func (e *Executor) isolate(cmdID string) Result {
	if !supportsIsolation {
		return unsupported(ActIsolateHost)
	}
	if len(e.collectors) == 0 {
		return refused("isolate-host: no collector address known: isolation would cut the collector")
	}
	present, err := isolationPresent()
	if err != nil {
		return failed("isolate-host: read the ruleset: %v", err)
	}
	was := e.st.Isolation != nil && present
	if err := applyIsolation(e.collectors, e.dns); err != nil {
		return failed("isolate-host: %v", err)
	}
	st := &isolationState{CommandID: cmdID, Since: time.Now().UTC(), Collectors: e.collectors, DNS: e.dns}
	if was {
		st.CommandID, st.Since = e.st.Isolation.CommandID, e.st.Isolation.Since
	}
	e.st.Isolation = st
	affected := []string{"table:inet " + TableName}
	for _, c := range e.collectors {
		affected = append(affected, "allow:"+endpoint(c))
	}
	for _, d := range e.dns {
		affected = append(affected, "dns:"+d.String())
	}
	if err := e.save(); err != nil {
		return Result{Status: StatusFailed, Affected: affected,
			Detail: fmt.Sprintf("isolate-host: the host is isolated but the state was not saved (a sensor restart will not re-apply it): %v", err)}
	}
	if was {
		return Result{Status: StatusNoop, Affected: affected, Detail: "isolate-host: already isolated; ruleset re-applied"}
	}
	return Result{Status: StatusOK, Affected: affected, Detail: fmt.Sprintf(
		"isolate-host: isolated (table inet %s, policy drop); allowed: loopback, established, %d collector address(es), %d DNS server(s), DHCP, IPv6 neighbour discovery",
		TableName, len(e.collectors), len(e.dns))}
}

// endpoint renders a collector address; port 0 means every port.
func endpoint(c netip.AddrPort) string {
	if c.Port() == 0 {
		return c.Addr().String()
	}
	return c.String()
}

// release runs release-host.
func (e *Executor) release() Result {
	if !supportsIsolation {
		return unsupported(ActReleaseHost)
	}
	existed, err := removeIsolation()
	if err != nil {
		return failed("release-host: %v", err)
	}
	had := e.st.Isolation != nil
	e.st.Isolation = nil
	if err := e.save(); err != nil {
		return failed("release-host: released, but the state was not saved (a sensor restart would isolate again): %v", err)
	}
	if !existed && !had {
		return result(StatusNoop, "release-host: not isolated")
	}
	return Result{Status: StatusOK, Detail: "release-host: table inet " + TableName + " removed", Affected: []string{"table:inet " + TableName}}
}

// reapplyIsolation restores the persisted isolation at start, allowing the
// collectors and DNS servers of then and of now (never cut the collector
// the sensor talks to today).
func (e *Executor) reapplyIsolation() error {
	if !supportsIsolation {
		return ErrUnsupported
	}
	st := e.st.Isolation
	collectors := slices.Clone(st.Collectors)
	for _, c := range e.collectors {
		if !slices.Contains(collectors, c) {
			collectors = append(collectors, c)
		}
	}
	dns := slices.Clone(st.DNS)
	for _, d := range e.dns {
		if !slices.Contains(dns, d) {
			dns = append(dns, d)
		}
	}
	if len(collectors) == 0 {
		return fmt.Errorf("no collector address: refusing to isolate")
	}
	return applyIsolation(collectors, dns)
}

// Isolated reports whether the persisted state says the host is isolated.
func (e *Executor) Isolated() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.Isolation != nil
}

// ProbeIsolation checks that host isolation can work here: the kernel's
// nftables answers over netlink (tillwatch-sensor check). It changes
// nothing.
func ProbeIsolation() error {
	_, err := isolationPresent()
	return err
}
