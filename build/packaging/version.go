package packaging

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	// semverCore is a release version at the start of a tag ("1.2.3").
	semverCore = regexp.MustCompile(`^([0-9]+\.[0-9]+\.[0-9]+)(.*)$`)
	// describeSuffix is what git describe adds after a tag: commits since
	// the tag, the abbreviated hash and the dirty mark.
	describeSuffix = regexp.MustCompile(`^-([0-9]+)-g([0-9a-f]+)(-dirty)?$`)
	// bareHash is git describe --always in a clone without tags.
	bareHash = regexp.MustCompile(`^([0-9a-f]{7,40})(-dirty)?$`)
	// debVersion is what this package produces: an upstream version
	// without hyphens (there is no Debian revision) starting with a digit.
	debVersion = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
	// unsafeChars are replaced in pre-release and free-form parts.
	unsafeChars = regexp.MustCompile(`[^A-Za-z0-9.+~]+`)
)

// DebVersion turns a buildinfo.Version (what the Makefile stamps: git
// describe --tags --always --dirty, or "dev") into a Debian version that
// sorts the way releases do:
//
//	v1.2.3                 -> 1.2.3
//	v1.2.3-4-gabc1234      -> 1.2.3+git4.gabc1234       (after 1.2.3)
//	v1.2.3-4-gabc1234-dirty-> 1.2.3+git4.gabc1234.dirty
//	v1.2.3-rc1, 0.1.0-dev  -> 1.2.3~rc1, 0.1.0~dev      (before the release)
//	abc1234-dirty          -> 0.0.0~gitabc1234.dirty    (no tag at all)
//	dev                    -> 0.0.0~dev
func DebVersion(v string) (string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", fmt.Errorf("empty version")
	}
	var out string
	if m := semverCore.FindStringSubmatch(strings.TrimPrefix(v, "v")); m != nil {
		core, rest := m[1], m[2]
		switch d := describeSuffix.FindStringSubmatch(rest); {
		case rest == "":
			out = core
		case d != nil:
			out = core + "+git" + d[1] + ".g" + d[2]
			if d[3] != "" {
				out += ".dirty"
			}
		case strings.HasPrefix(rest, "-"):
			out = core + "~" + sanitize(rest[1:])
		case strings.HasPrefix(rest, "+"):
			out = core + "+" + sanitize(rest[1:])
		default:
			out = core + "~" + sanitize(rest)
		}
	} else if h := bareHash.FindStringSubmatch(v); h != nil {
		out = "0.0.0~git" + h[1]
		if h[2] != "" {
			out += ".dirty"
		}
	} else {
		out = "0.0.0~" + sanitize(v)
	}
	if !debVersion.MatchString(out) {
		return "", fmt.Errorf("version %q: cannot make a Debian version of it (got %q)", v, out)
	}
	return out, nil
}

func sanitize(s string) string {
	return strings.Trim(unsafeChars.ReplaceAllString(s, "."), ".")
}
