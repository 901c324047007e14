package action

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

const supportsIsolation = true

// chainPriority is "filter - 10": ahead of a distribution's own filter
// tables at priority filter, so their accept cannot open what we drop
// (a packet must be accepted by every base chain on the hook).
const chainPriority = -10

// Ports kept open while isolated.
const (
	portDNS          = 53
	portDHCPServer   = 67
	portDHCPClient   = 68
	portDHCP6Client  = 546
	portDHCP6Server  = 547
	icmp6RouterSol   = 133 // router solicitation .. neighbour advertisement
	icmp6NeighborAdv = 136
)

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

// isolationPresent reports whether table inet tillwatch exists.
func isolationPresent() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("nftables: list tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == TableName {
			return true, nil
		}
	}
	return false, nil
}

// applyIsolation replaces table inet tillwatch in one netlink batch, which
// the kernel applies atomically: add (a no-op when it exists), delete, add
// with chains and rules. There is no moment with a half-built ruleset, and
// no moment without one when the host was isolated already.
func applyIsolation(collectors []netip.AddrPort, dns []netip.Addr) error {
	if len(collectors) == 0 {
		return fmt.Errorf("no collector address: refusing to isolate")
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := table()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	for _, in := range []bool{true, false} {
		name, hook := ChainOutput, nftables.ChainHookOutput
		if in {
			name, hook = ChainInput, nftables.ChainHookInput
		}
		policy := nftables.ChainPolicyDrop
		ch := c.AddChain(&nftables.Chain{
			Name: name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: hook,
			Priority: nftables.ChainPriorityRef(chainPriority), Policy: &policy,
		})
		for _, r := range isolationRules(in, collectors, dns) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: install table inet %s: %w (does the kernel have nf_tables? `tillwatch-sensor check` tells)", TableName, err)
	}
	return nil
}

// removeIsolation deletes table inet tillwatch; existed says whether it was
// there.
func removeIsolation() (existed bool, err error) {
	existed, err = isolationPresent()
	if err != nil || !existed {
		return existed, err
	}
	c, err := nftables.New()
	if err != nil {
		return true, fmt.Errorf("nftables: %w", err)
	}
	// Add first so the delete cannot fail if it vanished meanwhile.
	c.AddTable(table())
	c.DelTable(table())
	if err := c.Flush(); err != nil {
		return true, fmt.Errorf("nftables: delete table inet %s: %w", TableName, err)
	}
	return true, nil
}

// isolationRules returns the accept rules of one chain; everything else
// meets the chain's drop policy.
func isolationRules(in bool, collectors []netip.AddrPort, dns []netip.Addr) [][]expr.Any {
	ifKey := expr.MetaKeyOIFNAME
	if in {
		ifKey = expr.MetaKeyIIFNAME
	}
	rules := [][]expr.Any{
		// loopback
		{&expr.Meta{Key: ifKey, Register: 1}, cmpEq(ifname("lo")), accept()},
		// ct state established,related
		{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
			accept(),
		},
	}
	// The collector: its address (and TCP port when given), both ways.
	for _, c := range collectors {
		r := peer(c.Addr(), in)
		if c.Port() != 0 {
			r = append(r, l4(unix.IPPROTO_TCP)...)
			r = append(r, port(c.Port(), in)...)
		}
		rules = append(rules, append(r, accept()))
	}
	// DNS to the configured servers, UDP and TCP.
	for _, d := range dns {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			r := peer(d, in)
			r = append(r, l4(proto)...)
			r = append(r, port(portDNS, in)...)
			rules = append(rules, append(r, accept()))
		}
	}
	// DHCP and IPv6 neighbour discovery keep the host's address, without
	// which the collector is cut just the same once the lease runs out.
	local, remote := uint16(portDHCPClient), uint16(portDHCPServer)
	local6, remote6 := uint16(portDHCP6Client), uint16(portDHCP6Server)
	nd := append(nfproto(unix.NFPROTO_IPV6), l4(unix.IPPROTO_ICMPV6)...)
	nd = append(nd,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{icmp6RouterSol}, ToData: []byte{icmp6NeighborAdv}},
		accept())
	return append(rules, dhcp(unix.NFPROTO_IPV4, local, remote, in), dhcp(unix.NFPROTO_IPV6, local6, remote6, in), nd)
}

// dhcp accepts the client side of DHCP: from the local client port to the
// server port going out, the reverse coming in.
func dhcp(family byte, local, remote uint16, in bool) []expr.Any {
	src, dst := local, remote
	if in {
		src, dst = remote, local
	}
	r := nfproto(family)
	r = append(r, l4(unix.IPPROTO_UDP)...)
	r = append(r,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2}, cmpEq(binaryutil.BigEndian.PutUint16(src)),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, cmpEq(binaryutil.BigEndian.PutUint16(dst)),
	)
	return append(r, accept())
}

// peer matches the remote address: the source of inbound packets, the
// destination of outbound ones.
func peer(a netip.Addr, in bool) []expr.Any {
	a = a.Unmap()
	var off, n uint32
	family := byte(unix.NFPROTO_IPV4)
	switch {
	case a.Is4() && in:
		off, n = 12, 4
	case a.Is4():
		off, n = 16, 4
	case in:
		off, n, family = 8, 16, unix.NFPROTO_IPV6
	default:
		off, n, family = 24, 16, unix.NFPROTO_IPV6
	}
	r := nfproto(family)
	return append(r,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		cmpEq(a.AsSlice()),
	)
}

// port matches the remote port: the source port of inbound packets, the
// destination port of outbound ones. An l4 match must come first.
func port(p uint16, in bool) []expr.Any {
	off := uint32(2)
	if in {
		off = 0
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		cmpEq(binaryutil.BigEndian.PutUint16(p)),
	}
}

func nfproto(family byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmpEq([]byte{family})}
}

func l4(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpEq([]byte{proto})}
}

func cmpEq(b []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b} }

func accept() *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictAccept} }

// ifname pads an interface name to IFNAMSIZ, as the kernel compares it.
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}
