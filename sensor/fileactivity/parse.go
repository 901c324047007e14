package fileactivity

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The fanotify record layout (include/uapi/linux/fanotify.h), kept here
// rather than taken from x/sys so the parser builds and is fuzzed on every
// platform.
const (
	fanMetadataLen = 24 // struct fanotify_event_metadata
	fanVersion     = 3  // FANOTIFY_METADATA_VERSION

	infoFID         = 1  // FAN_EVENT_INFO_TYPE_FID
	infoDFIDName    = 2  // FAN_EVENT_INFO_TYPE_DFID_NAME
	infoDFID        = 3  // FAN_EVENT_INFO_TYPE_DFID
	infoOldDFIDName = 10 // FAN_EVENT_INFO_TYPE_OLD_DFID_NAME
	infoNewDFIDName = 12 // FAN_EVENT_INFO_TYPE_NEW_DFID_NAME
)

// rawEvent is one parsed fanotify event.
type rawEvent struct {
	Mask  uint64
	FD    int32 // -1 (FAN_NOFD) for FID groups and overflow
	PID   int32
	Infos []fidInfo
}

// fidInfo is one FID information record: the file system, a file handle of
// the object or its directory, and for *_NAME records the entry name.
type fidInfo struct {
	Type   uint8
	Key    string // fsid + handle type + handle bytes: identifies a directory
	Name   string
	HasDir bool
	// Fsid, HandleType and Handle are the record's file system and file
	// handle, for open_by_handle_at when Key is not yet known.
	Fsid       [8]byte
	HandleType int32
	Handle     []byte
}

var errShort = errors.New("fanotify: truncated record")

// parseEvents splits a read(2) buffer into events. It never panics on
// malformed input: the kernel is trusted, but the parser is fuzzed.
func parseEvents(buf []byte) ([]rawEvent, error) {
	var out []rawEvent
	for len(buf) > 0 {
		if len(buf) < fanMetadataLen {
			return out, errShort
		}
		evLen := binary.NativeEndian.Uint32(buf[0:4])
		vers := buf[4]
		metaLen := binary.NativeEndian.Uint16(buf[6:8])
		if vers != fanVersion {
			return out, fmt.Errorf("fanotify: metadata version %d, want %d", vers, fanVersion)
		}
		if evLen < fanMetadataLen || int(evLen) > len(buf) || metaLen < fanMetadataLen || uint32(metaLen) > evLen {
			return out, errShort
		}
		ev := rawEvent{
			Mask: binary.NativeEndian.Uint64(buf[8:16]),
			FD:   int32(binary.NativeEndian.Uint32(buf[16:20])),
			PID:  int32(binary.NativeEndian.Uint32(buf[20:24])),
		}
		infos := buf[metaLen:evLen]
		for len(infos) >= 4 {
			typ := infos[0]
			l := int(binary.NativeEndian.Uint16(infos[2:4]))
			if l < 4 || l > len(infos) {
				return out, errShort
			}
			if fi, ok := parseFID(typ, infos[4:l]); ok {
				ev.Infos = append(ev.Infos, fi)
			}
			infos = infos[l:]
		}
		out = append(out, ev)
		buf = buf[evLen:]
	}
	return out, nil
}

// parseFID reads the body of a FID record: fsid (8 bytes), struct
// file_handle (handle_bytes u32, handle_type i32, f_handle[]) and, for the
// *_NAME types, a NUL-terminated name. Other record types are skipped.
func parseFID(typ uint8, b []byte) (fidInfo, bool) {
	switch typ {
	case infoFID, infoDFIDName, infoDFID, infoOldDFIDName, infoNewDFIDName:
	default:
		return fidInfo{}, false
	}
	if len(b) < 16 {
		return fidInfo{}, false
	}
	hlen := int(binary.NativeEndian.Uint32(b[8:12]))
	if hlen > len(b)-16 {
		return fidInfo{}, false
	}
	fi := fidInfo{Type: typ, Key: string(b[0:8]) + string(b[12:16]) + string(b[16:16+hlen]), HasDir: typ != infoFID,
		HandleType: int32(binary.NativeEndian.Uint32(b[12:16])), Handle: append([]byte(nil), b[16:16+hlen]...)}
	copy(fi.Fsid[:], b[0:8])
	if typ == infoDFIDName || typ == infoOldDFIDName || typ == infoNewDFIDName {
		name := b[16+hlen:]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		fi.Name = string(name)
	}
	return fi, true
}

// handleKey builds the same key as parseFID from a directory's fsid and
// handle, so a directory marked by path can be recognised in FID events.
func handleKey(fsid [8]byte, handleType int32, handle []byte) string {
	var t [4]byte
	binary.NativeEndian.PutUint32(t[:], uint32(handleType))
	return string(fsid[:]) + string(t[:]) + string(handle)
}
