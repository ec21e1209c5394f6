//go:build race

package e2e_test

// raceEnabled is set when the tests run under the race detector, which
// slows every service several-fold: latency targets are checked without
// it.
const raceEnabled = true
