package upgrade

import "time"

// SetSampleTimeout sets how long NewRule waits for a template on the sample node, and returns
// a function that restores the previous value.
func SetSampleTimeout(d time.Duration) (restore func()) {
	old := sampleTimeout
	sampleTimeout = d
	return func() { sampleTimeout = old }
}
