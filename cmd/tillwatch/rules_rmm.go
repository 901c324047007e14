package main

import (
	"os"
	"strings"

	rmmdetect "github.com/tillwatch/tillwatch/sensor/detect/rmm"
	"github.com/tillwatch/tillwatch/sensor/rmm"
)

// lintRMM checks an rmm/ rule folder: the catalog (catalog*.yaml) and the
// behaviour rules (detections*.yaml), whose command-line samples are run at
// load, so lint and test are the same check. A folder with only a catalog
// or only extra rules (an extra --rules folder) is fine.
func lintRMM(dir string) ([]string, error) {
	fsys := os.DirFS(dir)
	var problems []string
	// errors.Join puts each problem on its own line; a line without a file
	// belongs to the file named last.
	add := func(err error) {
		file := dir
		for _, l := range strings.Split(err.Error(), "\n") {
			if l == "" {
				continue
			}
			if f, _, ok := strings.Cut(l, ".yaml:"); ok && !strings.Contains(f, " ") {
				file = dir + "/" + f + ".yaml"
				problems = append(problems, dir+"/"+l)
				continue
			}
			problems = append(problems, file+": "+l)
		}
	}
	if _, err := rmm.LoadCatalog(fsys, "."); err != nil {
		add(err)
	}
	full := false
	if ms, _ := os.ReadDir(dir); ms != nil {
		for _, m := range ms {
			full = full || m.Name() == "detections.yaml"
		}
	}
	load := rmmdetect.LoadExtraRules
	if full {
		load = rmmdetect.LoadRules
	}
	if _, err := load(fsys, "."); err != nil {
		add(err)
	}
	return problems, nil
}
