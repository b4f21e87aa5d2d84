// Package subnet is the 4-level subnet hierarchy: an ID packs region,
// fleet, vehicle and subsystem into 8 bits each (region in the top byte),
// nodes are assigned an ID from their labels, and a gateway decides
// whether traffic of a given visibility may cross from one subnet to
// another.
//
// Invariants (pinned by tests):
//   - Level 0 means "not specified" and only trailing levels may be
//     unspecified: 3.7.0.0 is region 3, fleet 7; 3.0.7.0 is not an ID. So
//     an ID's depth is its number of leading non-zero levels, and Contains
//     is a prefix test. The zero ID is Global, the root that contains
//     every ID.
//   - Every constructor that takes untrusted input (FromLevels,
//     FromUint32, Parse, NewRule, NewPolicy, NewGateway) returns an error
//     instead of panicking; the Must forms are for constants in code.
//   - Parse and String round-trip: Parse(id.String()) == id.
//   - Assignment is deterministic: rules apply in declaration order, a
//     later rule for the same level overrides an earlier one, and the
//     result is refused rather than silently truncated if it leaves a gap.
//   - Subnets describe topology, not authority: visibility filters where
//     traffic propagates; access control is identity's job.
package subnet
