package controllers

import (
	"context"
	"fmt"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/types"

	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Failpoints let tests "crash" the operator right after any data-plane
// call of an operation and check that a fresh operator finishes it from
// the record in status alone (DESIGN.md §7: no acknowledged event lost
// across an operator restart at any step).
//
// The crash points are every orchestrate.Step* point of the Driver (after
// each push, wait, promotion and drain) and these of the reconciler:
//
//   - StepRecorded: a topology an operation decided is in status, and
//     nothing else happened yet (not even the lease keeper saw it);
//   - StepPushed: a topology the reconciler recorded itself (a scale-down
//     or failover step) was pushed;
//   - StepDrainAnnotated: a leaving pod was marked drained, its node not
//     drained yet.
//
// The hook is nil in production (one atomic load per point). Tests set it
// through export_test.go; a hook that returns an error stops the
// operation there with nothing rolled back and no Event or memory
// update, as a dead process would (it blocks until the manager stops, so
// nothing of the old operator runs after the crash point).
const (
	StepRecorded       = "recorded"
	StepPushed         = "pushed"
	StepDrainAnnotated = "drain-annotated"
)

// failpointFunc is the test hook: cluster, step and the epoch reached.
type failpointFunc func(ctx context.Context, cluster types.NamespacedName, step string, epoch uint64) error

var failpointHook atomic.Pointer[failpointFunc]

// failpoint runs the hook, if any, at step; an error wraps
// orchestrate.ErrFailpoint.
func failpoint(ctx context.Context, cluster types.NamespacedName, step string, epoch uint64) error {
	f := failpointHook.Load()
	if f == nil {
		return nil
	}
	if err := (*f)(ctx, cluster, step, epoch); err != nil {
		return fmt.Errorf("%w %s at epoch %d: %w", orchestrate.ErrFailpoint, step, epoch, err)
	}
	return nil
}

// driverFailpoint adapts the hook to orchestrate.Driver.Failpoint.
func driverFailpoint(cluster types.NamespacedName) func(context.Context, string, *topology.Topology) error {
	return func(ctx context.Context, step string, t *topology.Topology) error {
		return failpoint(ctx, cluster, step, t.Epoch)
	}
}
