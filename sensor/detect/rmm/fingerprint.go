package rmm

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

// Fingerprint is tillwatch.rmm.fingerprint: a stable digest of the agent
// product and the normalised command line, equal on every host that runs
// the same push. Numbers, hex runs and temporary names are normalised
// because they differ per host.
func Fingerprint(product, name string, args []string) string {
	h := sha256.New()
	h.Write([]byte(product))
	h.Write([]byte{0})
	h.Write([]byte(NormaliseCommand(name, args)))
	return hex.EncodeToString(h.Sum(nil))[:32]
}

var (
	reHexRun = regexp.MustCompile(`[0-9a-f]{8,}`)
	reDigits = regexp.MustCompile(`[0-9]+`)
	reTmp    = regexp.MustCompile(`(/tmp|/var/tmp|/dev/shm)/[^/\s]+`)
)

// NormaliseCommand lowercases, replaces per-host tokens and joins name and
// args with single spaces.
func NormaliseCommand(name string, args []string) string {
	s := strings.ToLower(strings.Join(append([]string{name}, args...), " "))
	s = reTmp.ReplaceAllString(s, "$1/*")
	s = reHexRun.ReplaceAllString(s, "#")
	s = reDigits.ReplaceAllString(s, "0")
	return strings.Join(strings.Fields(s), " ")
}
