//go:build !linux

package fileguard

// exeToBlame cannot tell off Linux: nothing is quarantined.
func exeToBlame(string, int, string) (bool, string) {
	return false, "cannot tell whose code ran on this platform: not quarantined"
}
