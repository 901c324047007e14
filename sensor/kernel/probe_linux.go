package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// Feature is one thing the kernel offers (or not) to the layer.
type Feature struct {
	Name      string
	Available bool
	Detail    string
}

// Probe reports what this kernel offers the layer and whether its pins are
// in place under pinDir. It loads nothing that stays and mounts nothing.
func Probe(pinDir string) []Feature {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	var out []Feature
	add := func(name string, err error, ok string) {
		f := Feature{Name: name, Available: err == nil, Detail: ok}
		if err != nil {
			f.Detail = err.Error()
		}
		out = append(out, f)
	}
	tp := features.HaveProgramType(ebpf.TracePoint)
	add("eBPF tracepoint programs", tp, "syscall and sched tracepoints (exec argv, fork, exit, signals, file syscalls)")
	add("bpf_send_signal", features.HaveProgramHelper(ebpf.TracePoint, asm.FnSendSignal), "tripwires kill or stop the caller at the syscall")
	add("bpf_loop", features.HaveProgramHelper(ebpf.TracePoint, asm.FnLoop), "path basenames compared in the kernel")
	add("ring buffer", features.HaveMapType(ebpf.RingBuf), "records kept while the sensor is down")
	add("tracefs", tracefsState(), "mounted at "+tracefsDir)
	add("bpffs (pinning)", bpffsState(), "pins at "+pinDir+" keep the tripwires armed while the sensor is down")
	missing := []string{}
	for _, f := range out[:4] {
		if !f.Available {
			missing = append(missing, f.Name)
		}
	}
	if len(missing) > 0 {
		add("tamper protection", fmt.Errorf("missing: the kernel lacks %s; the sensor runs on the proc connector and an attacker who kills it is not stopped", strings.Join(missing, ", ")), "")
	} else {
		add("tamper protection", nil, "available")
	}
	if des, err := filepath.Glob(filepath.Join(pinDir, "*", "link_*")); err == nil && len(des) > 0 {
		add("tripwires pinned", nil, fmt.Sprintf("%d programs attached from %s (version %s on disk, this build %s)", len(des), pinDir, filepath.Base(filepath.Dir(des[0])), Version()))
	} else {
		add("tripwires pinned", errors.New("none under "+pinDir+": armed when the sensor starts"), "")
	}
	return out
}

func tracefsState() error {
	if _, err := os.Stat(filepath.Join(tracefsDir, "events", "syscalls")); err == nil {
		return nil
	}
	if b, err := os.ReadFile("/proc/filesystems"); err == nil && strings.Contains(string(b), "tracefs") {
		return nil // the sensor mounts it at start
	}
	return errors.New("tracefs not available in this kernel")
}

func bpffsState() error {
	if b, err := os.ReadFile("/proc/filesystems"); err == nil && strings.Contains(string(b), "\tbpf\n") {
		return nil
	}
	return errors.New("bpffs not available: tripwires would die with the sensor")
}
