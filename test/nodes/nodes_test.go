package nodes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
)

// TestHandoffUnderIngest (a) moves one shard from a0 to a1 while six SDK
// goroutines write.
func TestHandoffUnderIngest(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 10, "Leader")
	c.bootstrap()
	cl := c.client(ctx)
	in := ingest(cl, 6)
	defer in.halt()
	time.Sleep(500 * time.Millisecond)

	shard := c.ownedBy("a0")[0]
	start := time.Now()
	got, err := c.driver.Handoff(ctx, c.recorded(), topology.Move{Shard: shard, From: "a0", To: "a1"})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := got.Shard(shard); s.Owner != "a1" || s.Fenced {
		t.Fatalf("shard %d after handoff: %+v", shard, s)
	}
	in.mark()
	waitAcks(t, in, []uint16{shard}, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	in.halt()
	t.Logf("TIMING handoff of shard %d (%d events acknowledged so far): %v total, %v fenced (writes refused as moving)",
		shard, in.count(), took.Round(time.Millisecond), c.fencedWindow(shard).Round(time.Millisecond))
	c.verify(ctx, cl, in)
}

// TestDrainUnderIngest (b) drains a2: its shards move to a0 and a1 one
// handoff at a time.
func TestDrainUnderIngest(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 20, "Leader")
	c.bootstrap()
	cl := c.client(ctx)
	in := ingest(cl, 6)
	defer in.halt()
	time.Sleep(500 * time.Millisecond)

	moved := c.ownedBy("a2")
	start := time.Now()
	got, err := c.driver.Drain(ctx, c.recorded(), "a2")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if owned := got.OwnedBy("a2"); len(owned) != 0 {
		t.Fatalf("a2 still owns %v", owned)
	}
	if a, b := len(got.OwnedBy("a0")), len(got.OwnedBy("a1")); a != baseShards/2 || b != baseShards/2 {
		t.Fatalf("after the drain a0 owns %d and a1 %d shards, want %d each", a, b, baseShards/2)
	}
	in.mark()
	waitAcks(t, in, moved, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	in.halt()
	t.Logf("TIMING drain of a2 (%d shards): %v", len(moved), took.Round(time.Millisecond))
	c.verify(ctx, cl, in)
}

// TestSIGKILLFailoverUnderStandby (c) kills an owner with SIGKILL while
// the SDK writes under ackPolicy Standby. The operator stops renewing it,
// the pod restarts at once (as a kubelet would) but gets no topology until
// the standby was promoted after the dead owner's lease; then it comes back
// as a standby and catches up. No acknowledged event may be lost.
func TestSIGKILLFailoverUnderStandby(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 30, "Standby")
	c.bootstrap()
	cl := c.client(ctx)
	in := ingest(cl, 6)
	defer in.halt()
	time.Sleep(700 * time.Millisecond)

	lost := c.ownedBy("a0")
	before := in.count()
	c.setCut("a0", true)
	killed := time.Now()
	c.kill("a0")
	_, lastAcked := c.lastPush("a0")
	c.start("a0") // empty memory storage, no topology until the operator says

	got, err := c.driver.Promote(ctx, c.recorded(), "a0", lastAcked)
	if err != nil {
		t.Fatal(err)
	}
	promoted := time.Since(killed)
	for _, id := range lost {
		if s, _ := got.Shard(id); s.Owner != "s0" || !slices.Contains(s.Followers, "a0") {
			t.Fatalf("shard %d after promotion: %+v", id, s)
		}
	}
	if m, _ := got.Member("a0"); m.Role != topology.Standby {
		t.Fatalf("a0 is %q after promotion, want standby", m.Role)
	}
	c.setCut("a0", false)
	in.mark()
	ackedAt := waitAcks(t, in, lost, 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	in.halt()
	t.Logf("TIMING failover: SIGKILL to promotion recorded and pushed %v (lease %v), SIGKILL to the last of a0's shards %v acknowledging again %v; %d events acknowledged before the kill, %d in all",
		promoted.Round(time.Millisecond), time.Duration(leaseMillis)*time.Millisecond, lost, ackedAt.Sub(killed).Round(time.Millisecond), before, in.count())
	c.verify(ctx, cl, in)

	// The restarted node is a follower of its former shards and caught up.
	st, err := c.driver.Dial(c.member("a0").Admin).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Epoch != got.Epoch || len(st.Owned) != 0 {
		t.Fatalf("restarted a0: epoch %d owns %v, want epoch %d owning nothing", st.Epoch, st.Owned, got.Epoch)
	}
	for _, id := range lost {
		if !slices.Contains(st.Followed, id) {
			t.Fatalf("restarted a0 does not follow shard %d: %v", id, st.Followed)
		}
	}
}

// TestSplitBrainOwnerStopsAtLeaseEnd (d) cuts a1 off from the operator
// (no more pushes to it, everything else keeps running) and writes to it
// directly: every write answered before the lease could have ended is
// acknowledged, every write sent after it must have ended is refused with
// lease_expired. Then the standby is promoted and nothing acknowledged is
// lost.
func TestSplitBrainOwnerStopsAtLeaseEnd(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 40, "Standby")
	c.bootstrap()
	cl := c.client(ctx)
	in := ingest(cl, 4)
	defer in.halt()

	shard := c.ownedBy("a1")[0]
	type probe struct {
		sent, done time.Time
		status     int
		code       string
	}
	var (
		mu     sync.Mutex
		probes []probe
	)
	pctx, stopProbes := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: c.attempts}
	go func() {
		defer pwg.Done()
		for i := 0; pctx.Err() == nil; i++ {
			id := fmt.Sprintf("probe-%d", i)
			body, _ := json.Marshal(dataapi.IngestRequest{Events: []dataapi.Event{{Key: keyFor(shard, i), Payload: []byte(id)}}})
			p := probe{sent: time.Now()}
			req, _ := http.NewRequest(http.MethodPost, "http://"+c.member("a1").Data+"/v1/ingest", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(identity.HeaderName, c.dataToken())
			resp, err := hc.Do(req)
			p.done = time.Now()
			if err == nil {
				var e dataapi.ErrorResponse
				_ = json.NewDecoder(resp.Body).Decode(&e)
				resp.Body.Close()
				p.status, p.code = resp.StatusCode, e.Code
				if resp.StatusCode == http.StatusOK {
					in.mu.Lock()
					in.acked[id] = shard
					in.mu.Unlock()
				}
			}
			mu.Lock()
			probes = append(probes, p)
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(600 * time.Millisecond)
	c.setCut("a1", true)
	lastSent, lastAcked := c.lastPush("a1")
	lease := time.Duration(leaseMillis) * time.Millisecond
	time.Sleep(time.Until(lastAcked.Add(lease + 600*time.Millisecond)))
	stopProbes()
	pwg.Wait()

	// a1's last lease started between lastSent and lastAcked: a write
	// sent after lastAcked and answered before lastSent+lease was handled
	// inside it (earlier writes are not judged: a renewal delayed on this
	// busy machine may have let an earlier lease lapse).
	mustAck, mustRefuse := lastSent.Add(lease), lastAcked.Add(lease)
	var okBefore, refusedAfter int
	for _, p := range probes {
		switch {
		case p.sent.After(lastAcked) && p.done.Before(mustAck):
			if p.status != http.StatusOK {
				t.Errorf("write answered %v before the lease could end refused: %d %s", mustAck.Sub(p.done), p.status, p.code)
			}
			okBefore++
		case p.sent.After(mustRefuse):
			if p.status != http.StatusServiceUnavailable || p.code != dataapi.CodeLeaseExpired {
				t.Errorf("write sent %v after the lease ended: %d %q, want 503 lease_expired", p.sent.Sub(mustRefuse), p.status, p.code)
			}
			refusedAfter++
		}
	}
	if okBefore == 0 || refusedAfter == 0 {
		t.Fatalf("probes do not cover both sides of the lease end: %d before, %d after", okBefore, refusedAfter)
	}
	t.Logf("split brain: %d writes acknowledged before the lease end, %d refused with lease_expired after it (lease %v)", okBefore, refusedAfter, lease)

	// The operator promotes a1's shards once its lease is over.
	got, err := c.driver.Promote(ctx, c.recorded(), "a1", lastAcked)
	if err != nil {
		t.Fatal(err)
	}
	in.mark()
	waitAcks(t, in, got.OwnedBy("s0"), 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	in.halt()
	c.verify(ctx, cl, in)
}

// waitAcks waits until every shard in shards acknowledged a write since
// the ingester's last mark, and returns when the last of them did.
func waitAcks(t *testing.T, in *ingester, shards []uint16, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var last time.Time
		all := true
		for _, id := range shards {
			at, ok := in.firstAckOf(id)
			if !ok {
				all = false
				break
			}
			if at.After(last) {
				last = at
			}
		}
		if all {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("shards %v did not all acknowledge a write within %v", shards, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fencedWindow is how long shard was recorded fenced.
func (c *cluster) fencedWindow(shard uint16) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var from time.Time
	for _, r := range c.history {
		s, _ := r.t.Shard(shard)
		switch {
		case s.Fenced && from.IsZero():
			from = r.at
		case !s.Fenced && !from.IsZero():
			return r.at.Sub(from)
		}
	}
	return 0
}
