package sigma

import (
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"
)

// Import outcomes.
const (
	ImportTaken         = "taken"
	ImportOtherOS       = "other-os"       // valid, for an OS the import was not asked for
	ImportNotApplicable = "not-applicable" // valid, cannot run on tillwatch's events
	ImportError         = "error"          // not valid Sigma (or a duplicate id)
)

// ImportItem is what became of one rule file of an import.
type ImportItem struct {
	File    string // path in the source tree
	ID      string
	Outcome string
	Reason  string
}

// Import decides, for every rule file under dir of src, whether a sensor
// running one of goos can run it: taken rules are copied unedited by the
// caller; the rest come back with the reason. known holds rule ids already
// loaded (the built-in set): a clash is an error, as it would be at load.
func Import(src fs.FS, dir string, goos []string, known map[string]bool) []ImportItem {
	rs, ps := LoadDir(src, dir)
	var out []ImportItem
	errs := map[string][]string{}
	for _, p := range ps {
		if p.Level == LevelError {
			errs[p.File] = append(errs[p.File], p.String())
		}
	}
	for f, why := range errs {
		out = append(out, ImportItem{File: f, Outcome: ImportError, Reason: strings.Join(why, "; ")})
	}
	for _, r := range rs {
		it := ImportItem{File: r.File, ID: r.ID}
		if _, bad := errs[r.File]; bad {
			continue // a duplicate id: already reported
		}
		switch {
		case known[r.ID]:
			it.Outcome, it.Reason = ImportError, "rule id "+r.ID+" is already a built-in rule"
		case r.NotApplicable != "":
			it.Outcome, it.Reason = ImportNotApplicable, r.NotApplicable
		default:
			it.Outcome = ImportTaken
			if os, ok := productOS[r.Product]; ok && !slices.Contains(goos, os) {
				it.Outcome, it.Reason = ImportOtherOS, fmt.Sprintf("logsource product %s (importing for %s)", r.Product, strings.Join(goos, ", "))
			}
		}
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out
}

// ImportReasonClass shortens a reason to its kind, for the report's
// counts ("logsource category wmi_event", "field OriginalFileName").
func ImportReasonClass(reason string) string {
	first := strings.SplitN(reason, "; ", 2)[0]
	if i := strings.Index(first, "search "); i == 0 {
		if j := strings.Index(first, ": "); j > 0 {
			first = first[j+2:]
		}
	}
	for _, cut := range []string{":", " ("} {
		if i := strings.Index(first, cut); i > 0 {
			first = first[:i]
		}
	}
	return strings.TrimSpace(first)
}
