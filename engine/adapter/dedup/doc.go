// Package dedup remembers recently seen entry ids (the dedup ids adapters
// write with every entry) so a consumer can drop the duplicates a retried
// batch leaves in a store without server-side de-duplication (Redis
// Streams).
//
// Invariants (pinned by tests named after them):
//
//   - Eviction is FIFO, not LRU: when the set is full the id inserted
//     longest ago is forgotten, however recently it was seen again.
//   - Capacity is clamped to [1, MaxCapacity] (1<<24), so a hostile or
//     mistaken configuration cannot ask for unbounded memory.
//   - Save writes a temporary file, fsyncs it, renames it over the target
//     and fsyncs the directory. Every fsync or close error is returned; a
//     failed Save leaves the previous state file intact.
//   - A temporary file left by a crashed Save is removed before the next
//     Save creates its own, so one crash cannot break every later save.
//   - Load accepts only a well-formed state file (magic, version, lengths,
//     CRC-32C); anything else is an error, never a partially loaded set.
package dedup
