// Command mkdeb builds tillwatch's Debian packages (tillwatch-sensor,
// tillwatch-collector, tillwatch-cli) from the binaries in --bin into --out.
// `make deb` runs it after `make build`, linked with the same -ldflags, so
// the package version is the binaries' buildinfo.Version:
//
//	go run -ldflags "-X github.com/tillwatch/tillwatch/internal/buildinfo.Version=v1.2.3" \
//	    ./build/packaging/mkdeb --bin bin --out dist
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tillwatch/tillwatch/build/packaging"
	"github.com/tillwatch/tillwatch/internal/buildinfo"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mkdeb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o packaging.Options
	fs.StringVar(&o.BinDir, "bin", "bin", "directory holding tillwatch, tillwatch-sensor and tillwatch-collector")
	fs.StringVar(&o.OutDir, "out", "dist", "directory the .deb files are written to")
	fs.StringVar(&o.Maintainer, "maintainer", packaging.DefaultMaint, "Maintainer field of the packages")
	fs.StringVar(&o.Version, "version", buildinfo.Version, "version the binaries were stamped with (buildinfo.Version)")
	fs.BoolVar(&o.AllowNoYARA, "allow-no-yara", false, "package a sensor built without YARA (development builds only)")
	if err := fs.Parse(args); err != nil {
		return cfgfile.ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mkdeb: unexpected argument %q\n", fs.Arg(0))
		return cfgfile.ExitUsage
	}
	built, err := packaging.Build(o)
	if err != nil {
		fmt.Fprintln(stderr, "mkdeb: "+err.Error())
		return cfgfile.ExitRuntime
	}
	for _, b := range built {
		fmt.Fprintln(stdout, b.Path)
	}
	return cfgfile.ExitOK
}
