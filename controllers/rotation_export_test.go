package controllers

import "time"

// SetRotationGrace sets the default grace period of credential rotations
// (the time the old keys stay trusted after the switch) until the returned
// function is called.
func SetRotationGrace(d time.Duration) (restore func()) {
	old := defaultRotationGrace.Swap(int64(d))
	return func() { defaultRotationGrace.Store(old) }
}
