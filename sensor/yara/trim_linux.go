//go:build cgo && linux

package yara

// #include <malloc.h>
import "C"

// releaseCHeap gives the C heap's free pages back to the kernel, after the
// compiler's arena was freed (compactRules).
func releaseCHeap() { C.malloc_trim(0) }
