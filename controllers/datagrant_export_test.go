package controllers

import "time"

// SetDataGrantTTL sets the life of the data grants the operator signs
// until the returned function is called.
func SetDataGrantTTL(d time.Duration) (restore func()) {
	old := dataGrantTTL.Swap(int64(d))
	return func() { dataGrantTTL.Store(old) }
}
