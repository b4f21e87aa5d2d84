package redex

import "time"

// ClockResolution is the resolution of the default append timestamp.
const ClockResolution = time.Millisecond

// coarseClock is the default append clock. Reading the wall clock costs
// about as much as a whole append on some virtual machines, so one stamp
// serves every append for up to ClockResolution. Whether it is still fresh
// is decided on each append by reading the monotonic clock (half the cost
// of time.Now), not by a timer: a timer goroutine that is delayed under
// load would leave the stamp stale, and entries stamped early, for as long
// as it is delayed.
//
// The stamp is the wall time of its read plus ClockResolution and is
// handed out only while less than ClockResolution of monotonic time has
// passed since that read, so every stamp lies in [t, t+ClockResolution]
// for the wall time t of its append (as long as the wall clock is not
// stepped), and age retention never drops an entry before MaxAge has
// passed. No goroutine or timer is involved.
//
// now is called with the log's state lock held, so it needs no
// synchronisation of its own.
type coarseClock struct {
	origin time.Time   // monotonic origin of the system clock
	src    clockSource // nil: the system clock; tests substitute a fake
	stamp  int64       // Unix ns of the last wall read + ClockResolution
	until  int64       // monotonic ns from which stamp is no longer valid
}

// clockSource reads the clocks a coarseClock uses.
type clockSource interface {
	// mono returns monotonic nanoseconds since an arbitrary origin.
	mono() int64
	// wall returns the wall clock in Unix nanoseconds.
	wall() int64
}

func newCoarseClock(src clockSource) *coarseClock {
	return &coarseClock{origin: time.Now(), src: src}
}

// now returns the stamp for an append made now. The fast path is small
// enough to inline into the append.
func (c *coarseClock) now() int64 {
	m := c.monoNow()
	if m < c.until {
		return c.stamp
	}
	return c.refresh(m)
}

// refresh reads the wall clock. The stamp's validity is counted from m,
// the monotonic reading taken before the wall read, so it ends no later
// than ClockResolution after the wall reading itself.
func (c *coarseClock) refresh(m int64) int64 {
	var wall int64
	if c.src != nil {
		wall = c.src.wall()
	} else {
		wall = time.Now().UnixNano()
	}
	c.stamp = wall + int64(ClockResolution)
	c.until = m + int64(ClockResolution)
	return c.stamp
}

func (c *coarseClock) monoNow() int64 {
	if c.src != nil {
		return c.src.mono()
	}
	return int64(time.Since(c.origin))
}
