package redex

import (
	"sync/atomic"
	"time"
)

// ClockResolution is the resolution of the default append timestamp.
const ClockResolution = time.Millisecond

// coarseClock is the default append clock. Reading the wall clock costs
// about as much as a whole append on some virtual machines, so the value
// is cached for up to ClockResolution: the first append after the cache
// expires reads the clock and arms a timer that expires it again. The
// cached value is rounded up by ClockResolution, so a stamp is normally not
// earlier than the true append time and age retention never drops an entry
// before MaxAge has passed. No goroutine runs while the log is idle.
type coarseClock struct {
	cached atomic.Int64 // 0: expired
	timer  *time.Timer
}

func newCoarseClock() *coarseClock {
	c := &coarseClock{}
	c.timer = time.AfterFunc(time.Hour, func() { c.cached.Store(0) })
	c.timer.Stop()
	return c
}

// now is called with the log's state lock held, so it has one caller at a
// time; only the timer callback races with it, and that callback only ever
// expires a value that it has already seen stored.
func (c *coarseClock) now() int64 {
	if v := c.cached.Load(); v != 0 {
		return v
	}
	v := time.Now().UnixNano() + int64(ClockResolution)
	c.cached.Store(v)
	c.timer.Reset(ClockResolution)
	return v
}

func (c *coarseClock) stopIfSet() {
	if c != nil {
		c.timer.Stop()
	}
}
