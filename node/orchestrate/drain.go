package orchestrate

import (
	"context"
	"fmt"

	"github.com/purplerain/mesh-operator/node/topology"
)

// Drain moves every shard off leaving, one handoff at a time, planned with
// topology.Balance (so the shards go to the least loaded actives), then
// asks leaving to drain and checks it reports owning nothing and flushed.
// It returns the last recorded topology; on error the caller resumes by
// calling Drain again with it. The node's drain cannot be undone (it
// refuses every write until it restarts), so a cancelled scale-down that
// already reached it needs the pod restarted; the handoffs before it can
// be undone by moving shards back.
func (d *Driver) Drain(ctx context.Context, cur *topology.Topology, leaving string) (*topology.Topology, error) {
	t := cur
	for len(t.OwnedBy(leaving)) > 0 {
		moves := topology.Balance(t, []string{leaving}, 1)
		if len(moves) == 0 {
			return t, fmt.Errorf("%w: no active member can take the shards of %s", ErrConflict, leaving)
		}
		next, err := d.Handoff(ctx, t, moves[0])
		t = next
		if err != nil {
			return t, fmt.Errorf("drain %s: %w", leaving, err)
		}
	}
	c, err := d.client(t, leaving)
	if err != nil {
		return t, err
	}
	cctx, cancel := context.WithTimeout(ctx, d.stepTimeout())
	defer cancel()
	st, err := c.Drain(cctx)
	if err != nil {
		return t, fmt.Errorf("drain %s: %w", leaving, err)
	}
	if st.Owned != 0 || !st.Flushed {
		return t, fmt.Errorf("drain %s: node reports %d shards owned, flushed=%v", leaving, st.Owned, st.Flushed)
	}
	return t, d.failpoint(ctx, StepDrained, t)
}
