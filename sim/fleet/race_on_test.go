//go:build race

package fleet

// raceEnabled scales the load tests down: the race detector multiplies the
// cost of each of 1,000 TLS clients. `make test` runs them once without it.
const raceEnabled = true
