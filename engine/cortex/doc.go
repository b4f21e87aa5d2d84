// Package cortex folds a redex.Log into in-memory state.
//
// A Driver runs one goroutine that reads the log from a start position
// (FromBeginning, LiveOnly or FromSeq) and applies a fold function to each
// entry, in seq order, under the state's write lock.
//
// Invariants (each pinned by a test):
//
//   - Changes and ChangesWithLag carry only seqs that folded successfully.
//     Under the Stop policy a fold error halts the driver: IsRunning turns
//     false before any subscriber or waiter is released, the failing seq is
//     never broadcast, and change streams end with an error wrapping
//     ErrHalted. Under LogAndContinue the error is logged and counted, the
//     entry is skipped, and folding continues.
//   - A slow change subscriber never slows the fold: it loses the oldest
//     undelivered notifications and ChangesWithLag reports how many as a
//     Lagged(n) event; Changes skips the notice.
//   - The driver itself never skips an entry: if its tail lags it catches up
//     by reading the log, and if retention pruned entries it has not folded
//     it halts with a redex.ErrPruned error instead of folding past a gap.
//   - Snapshot returns the encoded state together with the seq it is
//     folded through, taken under one lock, and OpenFromSnapshot resumes at
//     the seq after it.
//   - Positions saturate at math.MaxUint64 and never wrap: after the entry
//     with that seq is folded, NextSeq stays there, Snapshot reports it as
//     folded through, and any further entry halts the driver instead of
//     being folded as if the log had started over.
package cortex
