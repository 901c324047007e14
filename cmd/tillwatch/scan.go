package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/tillwatch/tillwatch/internal/cfgfile"
	"github.com/tillwatch/tillwatch/internal/event"
	"github.com/tillwatch/tillwatch/rules"
	"github.com/tillwatch/tillwatch/sensor/yara"
)

// scanLine is one match of `tillwatch scan --json`, in ECS field names.
type scanLine struct {
	File struct {
		Path string `json:"path"`
	} `json:"file"`
	Rule  scanRule  `json:"rule"`
	Event scanEvent `json:"event"`
}

type scanRule struct {
	ID          string `json:"id,omitempty"`
	Name        string `json:"name"`
	Ruleset     string `json:"ruleset"`
	Description string `json:"description,omitempty"`
}

type scanEvent struct {
	Severity int `json:"severity"`
}

func scanCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		ruleDirs []string
		asJSON   bool
		noCache  bool
		cacheDir string
		so       yara.SweepOptions
	)
	c := &cobra.Command{
		Use:   "scan [--rules DIR]... [--json] PATH...",
		Short: "Scan files and folders with YARA (the built-in set, or only the --rules folders)",
		Long: "Scan files and folders (recursively, symbolic links not followed) with YARA. Each match is one line:\n" +
			"file.path, rule.name, rule.ruleset (tab-separated), or one JSON object per line with --json.\n" +
			"--rules replaces the built-in set; a folder with a yara/ subfolder uses that, any other folder is\n" +
			"read recursively for .yar/.yara files, so public rule sets load unmodified.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			if so.CPU <= 0 || so.CPU > 1 {
				return cfgfile.Usagef("--cpu %v: want a share in (0,1]", so.CPU)
			}
			if so.Threads < 1 {
				return cfgfile.Usagef("--threads %d: want at least 1", so.Threads)
			}
			for _, p := range paths {
				if _, err := os.Stat(p); err != nil {
					return cfgfile.Usagef("scan %s: %v", p, errors.Unwrap(err))
				}
			}
			var srcs []yara.Source
			var err error
			if len(ruleDirs) > 0 {
				srcs, err = yara.Sources(nil, "", ruleDirs)
			} else {
				srcs, err = yara.Sources(rules.Builtin, "yara", nil)
			}
			if err != nil {
				return cfgfile.Usage(disabledOK(err))
			}
			var r *yara.Rules
			if noCache {
				r, err = yara.Compile(srcs)
			} else {
				if cacheDir == "" {
					if cacheDir, err = yara.DefaultCacheDir(); err != nil {
						return cfgfile.Usagef("--cache-dir: no default (%v); give one or --no-cache", err)
					}
				}
				log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
				r, err = yara.CompileCached(srcs, cacheDir, log)
			}
			if err != nil {
				return cfgfile.Usage(disabledOK(err))
			}
			enc := json.NewEncoder(stdout)
			var failed int
			st, err := yara.SweepRules(cmd.Context(), r, paths, so, func(res yara.Result, err error) {
				if err != nil {
					failed++
					fmt.Fprintln(stderr, "tillwatch: scan: "+cfgfile.OneLine(err))
					return
				}
				for _, m := range res.Matches {
					if !asJSON {
						fmt.Fprintf(stdout, "%s\t%s\t%s\n", res.Path, m.Rule, event.RulesetYARA)
						continue
					}
					var l scanLine
					l.File.Path = res.Path
					l.Rule = scanRule{ID: m.Meta.ID, Name: m.Rule, Ruleset: event.RulesetYARA, Description: m.Meta.Description}
					l.Event.Severity = m.Meta.Severity
					_ = enc.Encode(l)
				}
			})
			if err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d files could not be scanned (see above)", failed, st.Files+int64(failed))
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&ruleDirs, "rules", nil, "rule folder or file (repeatable); replaces the built-in set")
	f.BoolVar(&asJSON, "json", false, "one JSON object per match")
	f.IntVar(&so.Threads, "threads", runtime.NumCPU(), "files scanned in parallel")
	f.Float64Var(&so.CPU, "cpu", 1, "share of each thread's time spent scanning, (0,1]; lower it on a busy till")
	f.Int64Var(&so.MaxFileSize, "max-size", 256<<20, "skip files larger than this many bytes (0: no limit)")
	f.DurationVar(&so.Timeout, "timeout", yara.DefaultTimeout, "per-file scan timeout")
	f.StringVar(&cacheDir, "cache-dir", "", "folder of compiled rule sets, reused while the rule files are unchanged (default: the user's cache folder, tillwatch/yara)")
	f.BoolVar(&noCache, "no-cache", false, "compile the rules without reading or writing the cache")
	return c
}
