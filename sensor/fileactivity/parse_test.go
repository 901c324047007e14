package fileactivity

import (
	"encoding/binary"
	"testing"
)

// record builds one fanotify event as the kernel lays it out.
func record(mask uint64, fd, pid int32, infos ...[]byte) []byte {
	var body []byte
	for _, in := range infos {
		body = append(body, in...)
	}
	b := make([]byte, fanMetadataLen, fanMetadataLen+len(body))
	binary.NativeEndian.PutUint32(b[0:4], uint32(fanMetadataLen+len(body)))
	b[4] = fanVersion
	binary.NativeEndian.PutUint16(b[6:8], fanMetadataLen)
	binary.NativeEndian.PutUint64(b[8:16], mask)
	binary.NativeEndian.PutUint32(b[16:20], uint32(fd))
	binary.NativeEndian.PutUint32(b[20:24], uint32(pid))
	return append(b, body...)
}

// fid builds an information record with an 8-byte handle and a name.
func fid(typ uint8, handle string, name string) []byte {
	body := make([]byte, 16)
	copy(body[0:8], "fsid0001")
	binary.NativeEndian.PutUint32(body[8:12], uint32(len(handle)))
	binary.NativeEndian.PutUint32(body[12:16], 1)
	body = append(body, handle...)
	if name != "" {
		body = append(body, name...)
		body = append(body, 0)
	}
	for (4+len(body))%4 != 0 {
		body = append(body, 0)
	}
	h := make([]byte, 4)
	h[0] = typ
	binary.NativeEndian.PutUint16(h[2:4], uint16(4+len(body)))
	return append(h, body...)
}

func TestParseEvents(t *testing.T) {
	t.Parallel()
	var fsid [8]byte
	copy(fsid[:], "fsid0001")
	dirKey := handleKey(fsid, 1, []byte("HANDLE01"))
	tests := []struct {
		name    string
		buf     []byte
		want    int
		wantErr bool
		check   func(t *testing.T, evs []rawEvent)
	}{
		{"fd event", record(0x8, 7, 42), 1, false, func(t *testing.T, evs []rawEvent) {
			if evs[0].FD != 7 || evs[0].PID != 42 || evs[0].Mask != 0x8 {
				t.Errorf("got %+v", evs[0])
			}
		}},
		{"create with name", record(0x100, -1, 9, fid(infoDFIDName, "HANDLE01", "a.txt")), 1, false, func(t *testing.T, evs []rawEvent) {
			if len(evs[0].Infos) != 1 || evs[0].Infos[0].Name != "a.txt" || evs[0].Infos[0].Key != dirKey {
				t.Errorf("got %+v", evs[0].Infos)
			}
		}},
		{"rename old and new", record(0x10000000, -1, 9, fid(infoOldDFIDName, "HANDLE01", "a"), fid(infoNewDFIDName, "HANDLE01", "a.locked")), 1, false, func(t *testing.T, evs []rawEvent) {
			if len(evs[0].Infos) != 2 || evs[0].Infos[0].Name != "a" || evs[0].Infos[1].Name != "a.locked" {
				t.Errorf("got %+v", evs[0].Infos)
			}
		}},
		{"two events", append(record(0x8, 3, 1), record(0x10000, 4, 2)...), 2, false, nil},
		{"truncated", record(0x8, 3, 1)[:20], 0, true, nil},
		{"bad version", func() []byte { b := record(0x8, 3, 1); b[4] = 2; return b }(), 0, true, nil},
		{"length beyond buffer", func() []byte { b := record(0x8, 3, 1); binary.NativeEndian.PutUint32(b[0:4], 999); return b }(), 0, true, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			evs, err := parseEvents(tc.buf)
			if (err != nil) != tc.wantErr || len(evs) != tc.want {
				t.Fatalf("parseEvents = %d events, err %v; want %d, err %v", len(evs), err, tc.want, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, evs)
			}
		})
	}
}

func FuzzParseEvents(f *testing.F) {
	f.Add(record(0x8, 7, 42))
	f.Add(record(0x100, -1, 9, fid(infoDFIDName, "HANDLE01", "a.txt")))
	f.Add(record(0x10000000, -1, 9, fid(infoOldDFIDName, "H", "a"), fid(infoNewDFIDName, "H", "b")))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, _ := parseEvents(b)
		for _, ev := range evs {
			for _, fi := range ev.Infos {
				if len(fi.Key) < 12 {
					t.Fatalf("short key %q", fi.Key)
				}
			}
		}
	})
}
