package orchestrate

import (
	"context"
	"errors"
	"fmt"

	"github.com/purplerain/mesh-operator/node/topology"
)

// Failpoints name the points right after each data-plane call of an
// operation. Driver.Failpoint is called at each with the topology the
// operation reached; tests make it stop the operation there, as if the
// operator crashed, and check that a fresh operator resumes from the
// record alone. Record itself is a crash point too: a Record callback
// that returns an error wrapping ErrFailpoint (the topology is recorded,
// the process "dies" before anything else) stops the operation the same
// way.
const (
	// Handoff.
	StepFollowPushed  = "handoff-follow-pushed"  // the new owner was told to follow
	StepCaughtUp      = "handoff-caught-up"      // its follower caught up
	StepFencePushed   = "handoff-fence-pushed"   // the old owner was told to fence
	StepFenced        = "handoff-fenced"         // fenced log settled, new owner equal
	StepCutoverPushed = "handoff-cutover-pushed" // the cutover reached the new owner
	StepAbortPushed   = "handoff-abort-pushed"   // a rollback was pushed
	// Promote.
	StepLeaseWaited   = "promote-lease-waited" // the failed owner's lease ran out
	StepPromotePushed = "promote-pushed"       // the promotion was pushed
	// Drain.
	StepDrained = "drain-drained" // the leaving node drained
)

// ErrFailpoint wraps the error of a failpoint that stopped an operation:
// nothing was rolled back, the recorded topology is where a restarted
// caller resumes.
var ErrFailpoint = errors.New("orchestrate: stopped at a failpoint")

// failpoint runs the Failpoint hook at step; a non-nil result is returned
// wrapped in ErrFailpoint.
func (d *Driver) failpoint(ctx context.Context, step string, t *topology.Topology) error {
	if d.Failpoint == nil {
		return nil
	}
	if err := d.Failpoint(ctx, step, t); err != nil {
		if errors.Is(err, ErrFailpoint) {
			return err
		}
		return fmt.Errorf("%w %s at epoch %d: %w", ErrFailpoint, step, t.Epoch, err)
	}
	return nil
}
