package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/engine/rules"
	"github.com/purplerain/mesh-operator/node/adminclient"
)

// Behaviour rules reach the nodes two ways. The ConfigMap carries the last
// valid spec.rules, so a node that starts (or restarts) loads them; its
// rules section is left out of the pods' config hash, so a rules change
// rolls no pod (resources.ConfigHash). Running nodes get them from
// reconcileRules: it asks each ready member for the hash of the rules it
// enforces (admin status) and pushes the wanted set (PUT /v1/rules) only
// where the hash differs. A member that confirmed the wanted hash is not
// asked again for rulesRecheck unless it turns not ready or moves, so a
// steady pass makes no admin call. The push is idempotent and keeps
// the rate windows of unchanged rules, so a repeated or overlapping push
// changes nothing. Members answer within rulesCallTimeout or are retried
// after rulesRetry (a member the lease keeper has not reached for a whole
// lease is not asked, so a cut-off node does not slow every pass); a member
// that becomes ready again triggers a pass (the pod watch), so a restarted
// node is checked as soon as it serves.

// rulesSighting is a member's rules hash and subnet as its status last
// reported them, at an admin address.
type rulesSighting struct {
	admin, hash, subnet string
	at                  time.Time
}

const (
	// rulesRecheck is how long a member's confirmed rules hash is trusted
	// without asking again. A member that turns not ready, moves to
	// another address or is sent other rules is asked at once; the
	// recheck bounds what a restart the pod's readiness never showed (a
	// node that reloaded rules from a stale ConfigMap) can leave behind.
	rulesRecheck = 30 * time.Second
	// rulesCallTimeout bounds each member's status read and push.
	rulesCallTimeout = 2 * time.Second
	// rulesRetry is when a pass that could not check or push every ready
	// member is retried.
	rulesRetry = 2 * time.Second
)

// reconcileRules validates spec.rules into obs (the RulesValid
// condition), and when push is set sends the wanted rules to every ready
// member that enforces others, recording the subnets the members report.
// An invalid spec.rules holds nothing else up: the nodes keep the last
// valid rules (the ConfigMap's). It returns when to check again (0: no
// need).
func (r *MeshClusterReconciler) reconcileRules(ctx context.Context, mc *meshv1.MeshCluster, obs *status.Observation, push bool) time.Duration {
	logger := log.FromContext(ctx)
	wanted, err := resources.Rules(mc)
	obs.RulesError = err
	if err != nil {
		// The last valid rules are those the ConfigMap holds.
		cm := &corev1.ConfigMap{}
		if getErr := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.ConfigMapName(mc)}, cm); getErr != nil {
			push = false
		}
		wanted = resources.RenderedRules(cm)
		r.reportInvalidRules(mc, obs, len(wanted))
	}
	obs.ActiveRules = len(wanted)

	t := obs.Topology
	if !push || r.Leases == nil || t == nil || obs.OperatorKey == nil {
		// Without a lease keeper nothing talks to nodes (tests of the
		// Kubernetes side alone), and before the first topology there is
		// no member to ask.
		return 0
	}
	set, err := rules.Compile(wanted)
	if err != nil {
		// The ConfigMap's rules were valid when rendered; this is a file
		// edited by hand. Leave the nodes as they are.
		logger.Error(err, "the ConfigMap's rules do not compile: not pushing")
		return 0
	}
	want := set.Hash()

	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		pushed  []string
		failed  []error
		subnets = map[string]string{}
		seen    = map[string]rulesSighting{}
		now     = time.Now()
	)
	name := client.ObjectKeyFromObject(mc)
	r.memory.with(name, func(cm *clusterMemory) {
		for k, v := range cm.rules {
			seen[k] = v
		}
	})
	// confirmed keeps this pass's sightings: members not ready or gone
	// are forgotten, so they are asked again when they come back.
	confirmed := map[string]rulesSighting{}
	for _, m := range t.Members {
		if !obs.PodReady[m.Name] {
			// A node that is not ready yet loads the ConfigMap's rules
			// when it starts, and is checked once it is ready.
			continue
		}
		if s, ok := seen[m.Name]; ok && s.admin == m.Admin && s.hash == want && now.Sub(s.at) < rulesRecheck {
			// Confirmed recently: no admin call on a steady pass.
			subnets[m.Name] = s.subnet
			confirmed[m.Name] = s
			continue
		}
		if r.Leases.Unreachable(client.ObjectKeyFromObject(mc), m.Name, t.Lease()) {
			// No topology push reached it for a whole lease (cut off,
			// hung): do not hold the pass up for rulesCallTimeout; the
			// retry checks it again.
			mu.Lock()
			failed = append(failed, fmt.Errorf("%s: no topology push answered for a lease", m.Name))
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := adminclient.NewHTTP(obs.OperatorKey, nil, m.Admin)
			cctx, cancel := context.WithTimeout(ctx, rulesCallTimeout)
			defer cancel()
			st, err := c.Status(cctx)
			if err != nil {
				mu.Lock()
				failed = append(failed, fmt.Errorf("%s: read status: %w", m.Name, err))
				mu.Unlock()
				return
			}
			mu.Lock()
			subnets[m.Name] = st.Subnet
			mu.Unlock()
			if st.SubnetError != "" {
				// The node logged it at start; repeated here only at
				// debug level, as every pass sees it again.
				logger.V(1).Info("node could not assign its subnet", "member", m.Name, "err", st.SubnetError)
			}
			if st.Rules.Hash == want {
				mu.Lock()
				confirmed[m.Name] = rulesSighting{admin: m.Admin, hash: want, subnet: st.Subnet, at: now}
				mu.Unlock()
				return
			}
			got, err := c.PutRules(cctx, wanted)
			if err == nil && got.Hash != want {
				// Both sides hash with rules.Set.Hash: a difference is a
				// node running another version of the engine.
				err = fmt.Errorf("node reports rules hash %s after the push, want %s", got.Hash, want)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, fmt.Errorf("%s: push rules: %w", m.Name, err))
				return
			}
			pushed = append(pushed, m.Name)
			confirmed[m.Name] = rulesSighting{admin: m.Admin, hash: want, subnet: st.Subnet, at: now}
		}()
	}
	wg.Wait()
	r.memory.with(name, func(cm *clusterMemory) { cm.rules = confirmed })
	obs.Subnets = subnets
	if len(pushed) > 0 {
		slices.Sort(pushed)
		logger.Info("rules pushed", "hash", want, "rules", len(wanted), "members", pushed)
		r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "RulesApplied", "PushRules",
			"%d behaviour rules (hash %s) applied on %s without a restart", len(wanted), want, strings.Join(pushed, ", "))
	}
	if len(failed) > 0 {
		logger.Info("rules not checked or pushed on every member; retrying", "err", errors.Join(failed...).Error())
		return rulesRetry
	}
	return 0
}

// reportInvalidRules records a Warning Event when the RulesValid message
// changes to a new failure, so a bad rule is announced once, not on every
// pass.
func (r *MeshClusterReconciler) reportInvalidRules(mc *meshv1.MeshCluster, obs *status.Observation, active int) {
	o := *obs
	o.ActiveRules = active
	next := status.RulesValid(o)
	if prev := meta.FindStatusCondition(mc.Status.Conditions, meshv1.ConditionRulesValid); prev != nil && prev.Status == next.Status && prev.Message == next.Message {
		return
	}
	r.Recorder.Eventf(mc, nil, corev1.EventTypeWarning, "InvalidRules", "ValidateRules", "%s", next.Message)
}

// shorterRequeue is the sooner of two requeue delays, 0 meaning none.
func shorterRequeue(a, b time.Duration) time.Duration {
	if a <= 0 {
		return b
	}
	if b <= 0 {
		return a
	}
	return min(a, b)
}
