package testenv

import (
	"testing"
	"time"
)

// maxPollInterval bounds the wait between two checks of a condition: a check
// may ask the API server, and a tighter loop would load the control plane
// whose timings the test measures.
const maxPollInterval = 50 * time.Millisecond

// Eventually checks cond until it holds and returns how long that took. It
// fails t after timeout with what, which states the condition ("three
// members settle"), and the reason cond gave at its last check.
//
// The first checks follow each other within a millisecond, for a unit test
// that waits on a goroutine; the interval then doubles up to 50 ms.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, why string)) time.Duration {
	t.Helper()
	start := time.Now()
	interval := time.Millisecond
	for {
		ok, why := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) >= timeout {
			if why != "" {
				t.Fatalf("%s: not within %s (%s)", what, timeout, why)
			}
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(interval)
		interval = min(2*interval, maxPollInterval)
	}
}
