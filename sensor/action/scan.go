package action

import (
	"context"
	"fmt"
	"path/filepath"
)

// scan runs scan: each path must resolve under an allowed root; the YARA
// engine is Options.Scan.
func (e *Executor) scan(ctx context.Context, paths []string) Result {
	if e.o.Scan == nil {
		return failed("scan: YARA not available")
	}
	resolved := make([]string, 0, len(paths))
	for _, p := range paths {
		r, err := filepath.EvalSymlinks(p)
		if err != nil {
			return refused("scan: %v", err)
		}
		if err := e.underRoot(r); err != nil {
			return refused("scan: %v", err)
		}
		resolved = append(resolved, r)
	}
	matches, err := e.o.Scan(ctx, resolved)
	if err != nil {
		return Result{Status: StatusFailed, Detail: fmt.Sprintf("scan: %v", err), Affected: matches}
	}
	return Result{Status: StatusOK, Detail: fmt.Sprintf("scan: %d path(s) scanned, %d match(es)", len(resolved), len(matches)), Affected: matches}
}
