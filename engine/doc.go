// Package engine is the root of the embedded mesh engine: a sharded event
// bus whose shards are append-only logs (redex) with folded state (cortex)
// and stateful compute daemons (compute). Nothing under engine/ imports
// Kubernetes packages; node/ embeds the engine and controllers/ drive nodes
// through node/client.
package engine
