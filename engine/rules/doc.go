// Package rules evaluates declarative behaviour rules over JSON event
// payloads at ingest: comparisons, membership, presence, and/or/not, and
// per-key rate limits over a fixed window.
//
// Invariants (each pinned by a test):
//   - Numbers are compared exactly. Payloads are decoded with
//     json.Decoder.UseNumber, integers stay int64 or uint64, and mixed
//     signed/unsigned or integer/float comparisons are sign-aware and never
//     round through float64, so values above 2^53 order correctly. A
//     payload number beyond float64's range orders as the infinity of its
//     sign; a rule constant like that is refused.
//   - NaN, a missing field and a type mismatch make every ordered
//     comparison (lt, le, gt, ge) and eq false. "ne" and "notIn" hold for
//     a present value that is not equal (a type mismatch is not equal), and
//     never for a missing field: use "absent" to match missing fields.
//   - A verdict lists its failing rules sorted and de-duplicated, so the
//     same events give the same verdict whatever the rule order.
//   - A refused batch consumes no rate budget: rate counts are tallied
//     tentatively and committed only when the whole batch is accepted.
//   - Replacing the rule set keeps the rate windows of rules whose
//     specification did not change; a changed rate limit starts a fresh
//     window; rules without a rate limit own no window, so a reload never
//     touches anything on their behalf. Per-rule verdict counters are kept
//     by name across reloads.
//   - Window arithmetic saturates at the largest duration instead of
//     wrapping, so a huge window never expires early.
//   - Every constructor that takes untrusted input (Parse, New, Compile)
//     returns an error instead of panicking; nesting and size are bounded.
package rules
