// Command meshctl talks to a mesh cluster's data API through the Go SDK
// (package client): it ingests generated events, polls them back and shows
// the topology the nodes serve. It needs the data API address of any node
// (host:9441); the SDK learns the rest of the cluster from it.
//
//	meshctl ingest   --addresses a,b --count N [--keys K] [--key-prefix P] [--batch B] [--size S]
//	meshctl poll     --addresses a,b [--shard S] [--from CURSOR|SEQ] [--limit N] [--quiet]
//	meshctl topology --addresses a,b [--json]
//
// Common flags: --addresses (default $MESHCTL_ADDRESSES), --transport
// http|binary, --timeout, and the data-API credentials nodes require
// (dataAuth mode Token): --credentials, the cluster's <cluster>-data-key
// Secret as JSON (kubectl get secret -o json) or as a mounted directory
// (default $MESHCTL_CREDENTIALS), from which the SDK delegates itself
// short-lived tokens; or --token-file, one token (Mesh-Token header form
// or binary form). Exit status 0 on success, 1 when the command failed
// (ingest: not every event acknowledged), 2 on bad usage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
