package rmm

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tillwatch/tillwatch/rules"
)

// TestConvertLOLRMM converts fixtures written in LOLRMM's published layout
// (testdata/lolrmm): Linux and Windows artifacts, PEMetadata as a list and
// as a map, a tool with nothing to recognise, one already built in, a file
// that does not parse.
func TestConvertLOLRMM(t *testing.T) {
	t.Parallel()
	known, err := LoadCatalog(rules.Builtin, "rmm")
	if err != nil {
		t.Fatal(err)
	}
	res, err := ConvertLOLRMM(os.DirFS("testdata/lolrmm"), ".", known)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]LOLRMMResult{}
	for _, r := range res {
		by[r.File] = r
	}
	if len(res) != 5 {
		t.Fatalf("%d results, want 5", len(res))
	}
	sb := by["shellbridge.yaml"].Product
	if sb == nil {
		t.Fatalf("shellbridge not taken: %+v", by["shellbridge.yaml"])
	}
	if sb.ID != "shellbridge-agent" || sb.Kind != KindRemoteAccess || sb.Reference != "https://shellbridge.example" ||
		sb.Linux == nil || sb.Windows == nil || sb.Darwin != nil {
		t.Errorf("shellbridge = %+v", sb)
	}
	if !slices.Equal(sb.Linux.Processes, []string{"shellbridged"}) ||
		!slices.Equal(sb.Linux.Paths, []string{"/opt/shellbridge/", "/usr/local/bin/shellbridged", "/etc/shellbridge/agent.toml"}) {
		t.Errorf("linux = %+v", sb.Linux)
	}
	// ShellBridge.exe is the same name: compared case-insensitively.
	if !slices.Equal(sb.Windows.Processes, []string{"shellbridge.exe"}) ||
		!slices.Equal(sb.Windows.Paths, []string{`C:\Program Files\ShellBridge\`, `%ProgramData%\ShellBridge\agent.log`}) ||
		!slices.Equal(sb.Windows.Services, []string{"ShellBridgeSvc"}) {
		t.Errorf("windows = %+v", sb.Windows)
	}
	notTaken := strings.Join(by["shellbridge.yaml"].NotTaken, "\n")
	for _, want := range []string{
		"/tmp/shellbridge*: wildcards", "~/.config/shellbridge/: relative to a user's home", "shellbridge.sock",
		"Registry: 1 keys", "Network: 2 domains, 1 ports: the sensor sees no DNS", "Detections: 1 Sigma rules", "EventLog: 1 entries",
	} {
		if !strings.Contains(notTaken, want) {
			t.Errorf("not-taken report misses %q:\n%s", want, notTaken)
		}
	}
	dv := by["deskview.yaml"].Product
	if dv == nil || dv.Kind != KindRMM || dv.Linux != nil || dv.Windows == nil ||
		!slices.Equal(dv.Windows.Processes, []string{"deskview_agent.exe", "DVAgent.exe"}) ||
		!slices.Equal(dv.Windows.Paths, []string{`C:\Program Files (x86)\DeskView\`}) {
		t.Errorf("deskview = %+v", dv)
	}
	dvNot := strings.Join(by["deskview.yaml"].NotTaken, "\n")
	for _, want := range []string{"agent.exe: too generic", `C:\Users\*\AppData\Local\DeskView\dv.exe: wildcards`, "FileHashes", "Other: 1"} {
		if !strings.Contains(dvNot, want) {
			t.Errorf("deskview report misses %q:\n%s", want, dvNot)
		}
	}
	if r := by["cloudonly.yaml"]; r.Product != nil || !strings.Contains(r.Reason, "nothing the sensor can recognise") {
		t.Errorf("cloudonly = %+v", r)
	}
	if r := by["anydesk_again.yaml"]; r.Product != nil || r.Reason != "already in the built-in catalog as anydesk" {
		t.Errorf("anydesk = %+v", r)
	}
	if r := by["broken.yaml"]; r.Product != nil || !strings.HasPrefix(r.Reason, "does not parse") {
		t.Errorf("broken = %+v", r)
	}

	// The products written out load as a catalog on top of the built-in
	// one and recognise the tool's processes and files.
	var ps []Product
	for _, r := range res {
		if r.Product != nil {
			ps = append(ps, *r.Product)
		}
	}
	body, err := MarshalCatalog("test", ps)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/catalog-lolrmm.yaml", body, 0o644); err != nil {
		t.Fatal(err)
	}
	more, err := LoadCatalog(os.DirFS(dir), ".")
	if err != nil {
		t.Fatalf("written catalog does not load: %v\n%s", err, body)
	}
	if err := known.Merge(more); err != nil {
		t.Fatal(err)
	}
	if p, ok := known.Product("shellbridge-agent"); !ok || p.Linux == nil {
		t.Errorf("merged catalog lacks shellbridge-agent")
	}
	if strings.Contains(string(body), "domains") {
		t.Errorf("catalog carries domains:\n%s", body)
	}
}

func TestLOLRMMID(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"NetLock RMM": "netlock-rmm", "tmate": "tmate", "X": "tool-x", "  Zoho  Assist!! ": "zoho-assist"} {
		if got := LOLRMMID(in); got != want || !idPattern.MatchString(got) {
			t.Errorf("LOLRMMID(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzConvertLOLRMMFile(f *testing.F) {
	ents, _ := os.ReadDir("testdata/lolrmm")
	for _, e := range ents {
		if raw, err := os.ReadFile("testdata/lolrmm/" + e.Name()); err == nil {
			f.Add(raw)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r := ConvertLOLRMMFile("f.yaml", raw)
		if r.Product != nil {
			if err := r.Product.Validate(); err != nil {
				t.Fatalf("taken product does not validate: %v", err)
			}
		}
	})
}
