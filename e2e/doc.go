// Package e2e holds the end-to-end tests: they build the real binaries and
// run a collector, enrolled sensors and the CLI as separate processes on
// loopback, with real processes as the attack. There is no library code here.
package e2e
