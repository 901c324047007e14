// Command pack writes rules/builtin.tar.gz from the rule files (run by
// `make rules` / `go generate ./rules` from the rules folder).
package main

import (
	"fmt"
	"os"

	"github.com/tillwatch/tillwatch/rules/archive"
)

func main() {
	raw, err := archive.Pack(os.DirFS("."))
	if err == nil {
		err = os.WriteFile("builtin.tar.gz", raw, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pack rules:", err)
		os.Exit(1)
	}
}
