package killswitch

import (
	"regexp"
	"testing"
)

// The hand-written checks accept exactly what the patterns they replaced
// did (compiled here, in the test only).
var (
	idRegexp       = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)
	tokenRegexp    = regexp.MustCompile(`^[A-Za-z0-9@._:/-]{1,256}$`)
	paramKeyRegexp = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
)

func checkTokens(t *testing.T, s string) {
	t.Helper()
	if got, want := isID(s), idRegexp.MatchString(s); got != want {
		t.Errorf("isID(%q) = %v, the pattern says %v", s, got, want)
	}
	if got, want := isToken(s), tokenRegexp.MatchString(s); got != want {
		t.Errorf("isToken(%q) = %v, the pattern says %v", s, got, want)
	}
	if got, want := isParamKey(s), paramKeyRegexp.MatchString(s); got != want {
		t.Errorf("isParamKey(%q) = %v, the pattern says %v", s, got, want)
	}
}

func TestTokenChecksMatchPatterns(t *testing.T) {
	t.Parallel()
	long := func(c string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = c[0]
		}
		return string(b)
	}
	for _, s := range []string{
		"", "a", "abcdefg", "abcdefgh", "ABC-def_123", "cmd-0001\n", "cmd-0001 ", "ünïcode-id", "host.example:443/x",
		"a@b", "_key", "key_1", "Key", "1key", "k", long("a", 32), long("a", 33), long("x", 64), long("x", 65),
		long("t", 256), long("t", 257), "tab\there", "host\x00name", "k-1",
	} {
		checkTokens(t, s)
	}
}

func FuzzTokenChecks(f *testing.F) {
	for _, s := range []string{"", "abcdefgh", "host.example:443", "key_1", "ünï", "a\n"} {
		f.Add(s)
	}
	f.Fuzz(checkTokens)
}
