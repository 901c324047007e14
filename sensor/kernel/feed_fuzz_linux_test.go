package kernel

import (
	"encoding/binary"
	"testing"

	"github.com/tillwatch/tillwatch/sensor/process"
	"github.com/tillwatch/tillwatch/sensor/proctree"
)

// record builds a ring record: the header, then body.
func record(typ, pid uint32, body []byte) []byte {
	b := make([]byte, hdrLen, hdrLen+len(body))
	binary.LittleEndian.PutUint32(b, typ)
	binary.LittleEndian.PutUint32(b[4:], pid)
	binary.LittleEndian.PutUint32(b[8:], pid)
	return append(b, body...)
}

// FuzzDecodeRecords feeds arbitrary bytes to the ring decoders: they must
// never panic, and an exit's code is either unknown or a shell code.
func FuzzDecodeRecords(f *testing.F) {
	exit := make([]byte, 8)
	binary.LittleEndian.PutUint32(exit, 3<<8)
	f.Add(record(recExit, 10, exit))
	f.Add(record(recExit, 10, nil))
	f.Add(record(recFork, 10, []byte{11, 0, 0, 0, 0, 0, 0, 0}))
	f.Add(record(recExecArgs, 10, make([]byte, 16+pathLen+8)))
	f.Add(record(recExec, 10, make([]byte, 8+pathLen)))
	f.Add(record(recStop, 10, make([]byte, 16+KeyLen)))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		fd := &ProcessFeed{pending: map[uint32]execArgs{}}
		ev, ok := fd.decode(b)
		if ok && ev.Kind == process.KernelExit && ev.ExitCode != proctree.ExitCodeUnknown && (ev.ExitCode < 0 || ev.ExitCode > 255) {
			t.Errorf("exit code %d", ev.ExitCode)
		}
		decodeTamper(b)
	})
}
