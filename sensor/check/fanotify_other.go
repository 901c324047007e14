//go:build !linux

package check

func probeFanotify([]string) (bool, string) {
	return false, "not on this OS (file activity uses fsnotify: no acting process, nothing stopped)"
}
