// Package daemons holds the built-in daemon kinds a MeshCluster can declare:
//
//   - counter: counts events per key.
//   - sum: sums a numeric JSON field per key over tumbling windows of event
//     time and emits each window's total when the window closes.
//   - tasks: Net's CRUD task model (create, rename, complete, delete).
//
// The key of an event is its log key when set, otherwise the string (or
// number) value of the JSON field named by the kind's "keyField" config
// (default "key").
//
// Config (the MeshCluster's daemons[].config, JSON; Validate checks it):
//
//	counter  {"keyField": "user"}                            all optional
//	sum      {"field": "amount", "window": "1m",             field, window required
//	          "keyField": "user", "timeField": "ts"}         timeField in Unix ns;
//	                                                         default: log timestamp
//	tasks    {}                                              payloads: {"op": "create"|
//	                                                         "rename"|"complete"|"delete",
//	                                                         "id": 7, "title": "...",
//	                                                         "nowNs": 0}
//
// Invariants:
//
//   - Every kind is deterministic: the same events in the same order give
//     the same state and the same Snapshot bytes (maps are encoded with
//     sorted keys), so a restored snapshot plus a replay equals a run that
//     never stopped. counter snapshots use a compact binary form (it is the
//     kind most likely to hold many keys); sum and tasks snapshots are JSON.
//   - A malformed event never wedges a daemon: it is counted in the state's
//     "malformed" counter and skipped, and Process returns no error for it.
//   - Restore of bytes that do not decode fails and leaves the daemon's
//     state unchanged.
//   - Each kind's State returns a JSON view of its state (CounterState,
//     SumState, TasksState) that shares nothing with the daemon; StateView
//     builds the same view from a snapshot's state bytes without touching a
//     running daemon (the node's GET /v1/daemons uses it).
package daemons
