package orchestrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/purplerain/mesh-operator/node/adminapi"
	"github.com/purplerain/mesh-operator/node/adminclient"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Errors callers branch on.
var (
	// ErrAborted wraps the cause of a handoff that was rolled back: the
	// recorded topology leaves the old owner owning the shard, unfenced.
	ErrAborted = errors.New("orchestrate: handoff aborted")
	// ErrNoCandidate means no reachable follower can take a failed owner's
	// shard.
	ErrNoCandidate = errors.New("orchestrate: no reachable follower to promote")
	// ErrConflict means the recorded topology contradicts the operation
	// asked for (for example the shard is owned by a third node).
	ErrConflict = errors.New("orchestrate: topology conflicts with the operation")
	// ErrCatchingUp (with Driver.ResumableCatchUp) means a handoff's new
	// owner had not caught up within StepTimeout: the follow step stays
	// recorded, the shard stays writable at its owner, and calling
	// Handoff again continues the wait.
	ErrCatchingUp = errors.New("orchestrate: new owner still catching up")

	errRecord = errors.New("record topology")
)

// Driver runs operations against one cluster's nodes.
type Driver struct {
	// Dial returns the admin client of a node by its admin address.
	Dial adminclient.Dialer
	// Record persists a topology; it must succeed before any node is sent
	// that topology. The operator writes its status here.
	Record func(*topology.Topology) error
	// PollInterval is how often status is read while waiting. Default 20ms.
	PollInterval time.Duration
	// StepTimeout bounds each wait of an operation. Default 30s.
	StepTimeout time.Duration
	// CallTimeout bounds one admin call. Default 2s.
	CallTimeout time.Duration
	// Settle is how long a fenced owner's next seq must stay put before
	// the cutover: writes admitted just before the fence reach the log
	// within it. Default 100ms.
	Settle time.Duration
	// LeaseMargin is waited beyond a failed owner's lease before its
	// shards are promoted, for clock rate differences. Default lease/20.
	LeaseMargin time.Duration
	// ResumableCatchUp makes a handoff whose catch-up wait (step 1) runs
	// out of StepTimeout return ErrCatchingUp instead of aborting: the
	// caller bounds the whole move itself (the operator's
	// migration.timeout) and resumes it later. Waits on a fenced shard
	// still abort, as a fenced shard refuses writes.
	ResumableCatchUp bool
	// Failpoint, when set, is called after each data-plane call with the
	// step (Step* constants) and the topology reached; an error stops the
	// operation at once, nothing rolled back (see ErrFailpoint). Only
	// tests set it.
	Failpoint func(ctx context.Context, step string, t *topology.Topology) error
	Logger    *slog.Logger
}

func (d *Driver) pollInterval() time.Duration { return orDefault(d.PollInterval, 20*time.Millisecond) }
func (d *Driver) stepTimeout() time.Duration  { return orDefault(d.StepTimeout, 30*time.Second) }
func (d *Driver) callTimeout() time.Duration  { return orDefault(d.CallTimeout, 2*time.Second) }
func (d *Driver) settle() time.Duration       { return orDefault(d.Settle, 100*time.Millisecond) }

func (d *Driver) logger() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger
}

func orDefault(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

// client returns the admin client of member name in t.
func (d *Driver) client(t *topology.Topology, name string) (adminclient.Client, error) {
	m, ok := t.Member(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a member at epoch %d", ErrConflict, name, t.Epoch)
	}
	return d.Dial(m.Admin), nil
}

// status reads one node's status within CallTimeout.
func (d *Driver) status(ctx context.Context, t *topology.Topology, name string) (adminapi.Status, error) {
	c, err := d.client(t, name)
	if err != nil {
		return adminapi.Status{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.callTimeout())
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return st, fmt.Errorf("status of %s: %w", name, err)
	}
	return st, nil
}

// recordAndPush records t, then pushes it.
func (d *Driver) recordAndPush(ctx context.Context, t *topology.Topology, required ...string) error {
	if err := d.Record(t); err != nil {
		return fmt.Errorf("%w: epoch %d: %w", errRecord, t.Epoch, err)
	}
	return d.Push(ctx, t, required...)
}

// Push sends t (already recorded) to every member at once. Failures of the
// members named in required are returned; the others are logged, as a node
// that missed an epoch receives the next push (or renewal) anyway.
func (d *Driver) Push(ctx context.Context, t *topology.Topology, required ...string) error {
	return d.push(ctx, t, nil, required)
}

// push sends t to every member, through Promote for the members in promote
// (with the shards they take over) and PutTopology for the rest.
func (d *Driver) push(ctx context.Context, t *topology.Topology, promote map[string][]uint16, required []string) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, m := range t.Members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, d.callTimeout())
			defer cancel()
			c := d.Dial(m.Admin)
			var err error
			if shards, ok := promote[m.Name]; ok {
				err = c.Promote(cctx, t, shards)
			} else {
				err = c.PutTopology(cctx, t)
			}
			if err == nil {
				return
			}
			if _, req := promote[m.Name]; req || slices.Contains(required, m.Name) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("push epoch %d to %s: %w", t.Epoch, m.Name, err))
				mu.Unlock()
				return
			}
			d.logger().Warn("push missed a member", "member", m.Name, "epoch", t.Epoch, "err", err)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitFor polls cond every PollInterval until it reports done, returns an
// error, StepTimeout passes or ctx ends. what names the wait in errors.
func (d *Driver) waitFor(ctx context.Context, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d.stepTimeout())
	defer cancel()
	tick := time.NewTicker(d.pollInterval())
	defer tick.Stop()
	var last error
	for {
		done, err := cond(ctx)
		if done && err == nil {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%s: %w (last: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// shardStatus finds shard id with the given role in st.
func shardStatus(st adminapi.Status, id uint16, role string) (next uint64, lag uint64, connected, fenced, ok bool) {
	for _, s := range st.Shards {
		if s.ID == id && s.Role == role {
			return s.Next, s.Lag, s.Connected, s.Fenced, true
		}
	}
	return 0, 0, false, false, false
}
