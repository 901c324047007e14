package process

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// Builders for hand-made datagrams, laid out as the kernel does.

func nlmsg(typ uint16, body []byte) []byte {
	ne := binary.NativeEndian
	n := nlmsgHdrLen + len(body)
	b := make([]byte, (n+3)&^3)
	ne.PutUint32(b[0:4], uint32(n))
	ne.PutUint16(b[4:6], typ)
	copy(b[nlmsgHdrLen:], body)
	return b
}

func cnmsg(idx, val, seq, ack uint32, data []byte) []byte {
	ne := binary.NativeEndian
	b := make([]byte, cnMsgLen+len(data))
	ne.PutUint32(b[0:4], idx)
	ne.PutUint32(b[4:8], val)
	ne.PutUint32(b[8:12], seq)
	ne.PutUint32(b[12:16], ack)
	ne.PutUint16(b[16:18], uint16(len(data)))
	copy(b[cnMsgLen:], data)
	return b
}

func procEv(what, cpu uint32, ts uint64, data ...uint32) []byte {
	ne := binary.NativeEndian
	// The kernel always sends the full union (40 bytes on current kernels).
	b := make([]byte, procEventHdrLen+40)
	ne.PutUint32(b[0:4], what)
	ne.PutUint32(b[4:8], cpu)
	ne.PutUint64(b[8:16], ts)
	for i, d := range data {
		ne.PutUint32(b[procEventHdrLen+4*i:], d)
	}
	return b
}

func datagram(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = append(b, m...)
	}
	return b
}

func procMsg(seq uint32, ev []byte) []byte {
	return nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, seq, 0, ev))
}

// encode is the inverse of parseDatagram for one event.
func encode(ev procEvent) []byte {
	var data []uint32
	switch ev.What {
	case procEventNone:
		data = []uint32{ev.AckErr}
	case procEventFork:
		data = []uint32{uint32(ev.ParentPID), uint32(ev.ParentTGID), uint32(ev.ChildPID), uint32(ev.ChildTGID)}
	case procEventExec:
		data = []uint32{uint32(ev.PID), uint32(ev.TGID)}
	case procEventExit:
		data = []uint32{uint32(ev.PID), uint32(ev.TGID), ev.ExitStatus, ev.ExitSignal}
	}
	return nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, ev.Seq, ev.Ack, procEv(ev.What, ev.CPU, ev.TimestampNS, data...)))
}

func TestParseDatagram(t *testing.T) {
	t.Parallel()
	fork := procMsg(7, procEv(procEventFork, 1, 1000, 300, 300, 301, 301))
	tests := []struct {
		name    string
		in      []byte
		want    []procEvent
		wantErr error
	}{
		{
			name: "fork",
			in:   fork,
			want: []procEvent{{What: procEventFork, CPU: 1, TimestampNS: 1000, Seq: 7, ParentPID: 300, ParentTGID: 300, ChildPID: 301, ChildTGID: 301}},
		},
		{
			name: "exec",
			in:   procMsg(8, procEv(procEventExec, 0, 2000, 301, 301)),
			want: []procEvent{{What: procEventExec, TimestampNS: 2000, Seq: 8, PID: 301, TGID: 301}},
		},
		{
			name: "exit with status and parent fields",
			in:   procMsg(9, procEv(procEventExit, 0, 3000, 301, 301, 2<<8, 17, 300, 300)),
			want: []procEvent{{What: procEventExit, TimestampNS: 3000, Seq: 9, PID: 301, TGID: 301, ExitStatus: 2 << 8, ExitSignal: 17}},
		},
		{
			name: "ack",
			in:   nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, 0, 43, procEv(procEventNone, 0, 1, 1))),
			want: []procEvent{{What: procEventNone, TimestampNS: 1, Ack: 43, AckErr: 1}},
		},
		{
			name: "other kinds keep only the header",
			in:   procMsg(1, procEv(0x200 /* comm */, 0, 5, 301, 301, 0x41414141)),
			want: []procEvent{{What: 0x200, TimestampNS: 5, Seq: 1}},
		},
		{
			name: "several messages in one datagram",
			in:   datagram(fork, procMsg(8, procEv(procEventExec, 0, 2000, 301, 301))),
			want: []procEvent{
				{What: procEventFork, CPU: 1, TimestampNS: 1000, Seq: 7, ParentPID: 300, ParentTGID: 300, ChildPID: 301, ChildTGID: 301},
				{What: procEventExec, TimestampNS: 2000, Seq: 8, PID: 301, TGID: 301},
			},
		},
		{
			name: "other connectors and no-ops are skipped",
			in: datagram(
				nlmsg(nlmsgDone, cnmsg(4 /* CN_IDX_CIFS */, 1, 0, 0, []byte{1, 2, 3, 4})),
				nlmsg(nlmsgNoop, nil),
				fork,
			),
			want: []procEvent{{What: procEventFork, CPU: 1, TimestampNS: 1000, Seq: 7, ParentPID: 300, ParentTGID: 300, ChildPID: 301, ChildTGID: 301}},
		},
		{name: "empty", in: nil, want: nil},
		{name: "short header", in: []byte{1, 2, 3}, wantErr: errMalformed},
		{name: "nlmsg_len past the end", in: fork[:len(fork)-8], wantErr: errMalformed},
		{name: "nlmsg_len below header", in: nlmsgWithLen(8), wantErr: errMalformed},
		{name: "short cn_msg", in: nlmsg(nlmsgDone, make([]byte, 10)), wantErr: errMalformed},
		{name: "cn_msg len past the end", in: nlmsg(nlmsgDone, cnmsgWithLen(200)), wantErr: errMalformed},
		{name: "short proc_event", in: procMsg(1, make([]byte, 8)), wantErr: errMalformed},
		{name: "fork without its data", in: procMsg(1, procEv(procEventFork, 0, 1)[:procEventHdrLen+8]), wantErr: errMalformed},
		{name: "short NLMSG_ERROR", in: nlmsg(nlmsgError, nil), wantErr: errMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseDatagram(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseDatagramNetlinkError(t *testing.T) {
	t.Parallel()
	body := make([]byte, 4)
	binary.NativeEndian.PutUint32(body, uint32(0xffffffff)) // -EPERM
	if _, err := parseDatagram(nlmsg(nlmsgError, body)); err == nil || errors.Is(err, errMalformed) {
		t.Fatalf("err = %v, want a netlink error", err)
	}
	if evs, err := parseDatagram(nlmsg(nlmsgError, make([]byte, 4))); err != nil || evs != nil {
		t.Fatalf("ack-style NLMSG_ERROR 0: %v, %v", evs, err)
	}
}

func nlmsgWithLen(n uint32) []byte {
	b := nlmsg(nlmsgDone, make([]byte, 24))
	binary.NativeEndian.PutUint32(b[0:4], n)
	return b
}

func cnmsgWithLen(n uint16) []byte {
	b := cnmsg(cnIdxProc, cnValProc, 0, 0, make([]byte, 16))
	binary.NativeEndian.PutUint16(b[16:18], n)
	return b
}

func TestSubscribeMsg(t *testing.T) {
	t.Parallel()
	b := subscribeMsg(4242, procCnMcastListen)
	ne := binary.NativeEndian
	if got := ne.Uint32(b[0:4]); int(got) != len(b) || len(b) != 40 {
		t.Fatalf("nlmsg_len %d, datagram %d bytes, want 40", got, len(b))
	}
	if ne.Uint16(b[4:6]) != nlmsgDone || ne.Uint32(b[12:16]) != 4242 {
		t.Fatalf("bad nlmsghdr % x", b[:16])
	}
	c := b[nlmsgHdrLen:]
	if ne.Uint32(c[0:4]) != cnIdxProc || ne.Uint32(c[4:8]) != cnValProc || ne.Uint32(c[12:16]) != 4242 ||
		ne.Uint16(c[16:18]) != 4 || ne.Uint32(c[20:24]) != procCnMcastListen {
		t.Fatalf("bad cn_msg % x", c)
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status uint32
		want   int
	}{
		{"success", 0, 0},
		{"exit 1", 1 << 8, 1},
		{"exit 255", 255 << 8, 255},
		{"killed by SIGKILL", 9, 137},
		{"killed by SIGSEGV with core", 11 | 0x80, 139},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := exitCode(tc.status); got != tc.want {
				t.Fatalf("exitCode(%#x) = %d, want %d", tc.status, got, tc.want)
			}
		})
	}
}

// FuzzParseProcEvent checks that no datagram panics the parser, and that
// what it decodes survives a round trip through the kernel's layout.
func FuzzParseProcEvent(f *testing.F) {
	f.Add(procMsg(7, procEv(procEventFork, 1, 1000, 300, 300, 301, 301)))
	f.Add(procMsg(8, procEv(procEventExec, 0, 2000, 301, 301)))
	f.Add(procMsg(9, procEv(procEventExit, 0, 3000, 301, 301, 9, 17, 300, 300)))
	f.Add(datagram(nlmsg(nlmsgNoop, nil), procMsg(8, procEv(procEventExec, 0, 2000, 301, 301))))
	f.Add(nlmsg(nlmsgDone, cnmsg(cnIdxProc, cnValProc, 0, 1, procEv(procEventNone, 0, 1, 0))))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := parseDatagram(b)
		if err != nil {
			return
		}
		var re []byte
		for _, ev := range evs {
			re = append(re, encode(ev)...)
		}
		again, err := parseDatagram(re)
		if err != nil {
			t.Fatalf("re-encoded events do not parse: %v", err)
		}
		if !reflect.DeepEqual(evs, again) && !(len(evs) == 0 && len(again) == 0) {
			t.Fatalf("round trip changed events:\n%+v\n%+v", evs, again)
		}
	})
}
