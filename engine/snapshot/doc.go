// Package snapshot keeps the newest state snapshot of each entity (for
// example a daemon bound to a shard) for migration and restart.
//
// Invariants (each pinned by a test):
//
//   - A store keeps one snapshot per entity: the newest accepted one.
//   - Every entity has a high-water mark: the highest Through seq ever
//     accepted for it. Put rejects, with a *StaleError, a snapshot whose
//     Through is not strictly above the mark, so a slow or restarted
//     producer can never rewind an entity to older state.
//   - The high-water mark survives Remove: removing a snapshot frees its
//     bytes but does not let an older snapshot be staged again.
//   - Forgetting a high-water mark defeats that anti-rewind rule, so the
//     operation is unexported; only this package's own tests use it.
package snapshot
