// Package nodes holds the process-level tests of the mesh node (issue 7):
// cmd/mesh-node is built once, and every test starts three actives and a
// standby as real processes on their own 127.0.2.x addresses, drives them
// as the operator would (package node/orchestrate, with a lease keeper that
// renews every lease/3) and writes through the client SDK the whole time.
//
// Every test checks that each acknowledged event is stored exactly once
// (once per time the SDK had to send it, for the few events a node
// appended but could not acknowledge; never zero times), and that seqs
// increase per shard in poll order, and that every declared daemon (a
// counter and a sum) on each shard's owner equals a reference fold of the
// shard's events as read back.
package nodes
