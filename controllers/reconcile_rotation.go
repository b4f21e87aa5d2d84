package controllers

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	meshv1 "github.com/purplerain/mesh-operator/api/v1alpha1"
	"github.com/purplerain/mesh-operator/controllers/resources"
	"github.com/purplerain/mesh-operator/controllers/status"
	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/node/adminapi"
	"github.com/purplerain/mesh-operator/node/adminclient"
	nodeconfig "github.com/purplerain/mesh-operator/node/config"
	"github.com/purplerain/mesh-operator/node/orchestrate"
	"github.com/purplerain/mesh-operator/node/topology"
)

// Credential rotation on request (the mesh.purplerain.io/rotate-credentials
// annotation set to a value not handled yet). Both key pairs of the
// cluster are replaced, the operator key (admin tokens, data-API grants)
// and the cluster key (replication tokens), on running nodes, without a
// pod restart and without a moment in which a node refuses a token a peer
// or the operator signed with a key the rotation still uses:
//
//   - Trust: new keys are made and recorded in the operator-key Secret;
//     every node is told (signed with the old operator key) to trust old
//     and new keys. Then the Secrets switch: the operator key Secret's
//     current key and the cluster key Secret's key become the new ones, so
//     a pod that restarts from here on loads them, and the operator signs
//     with the new key (the ConfigMap's operator.pub follows it).
//   - Switch, a grace period later (so clients that pin the server keys
//     the data Secret names, both cluster keys since the rotation began,
//     can load it): every node is told to sign its replication tokens and
//     wire handshakes with the new cluster key (its private half sealed
//     under the old one), still trusting both.
//   - Drop, a grace period later (so applications can load the data grant
//     re-signed with the new key): every node is told to trust only the
//     new keys. Then status.credentials records the value.
//
// Each push carries the whole credential set (idempotent), goes to every
// pod that has an address, and must be answered by all of them before
// the rotation moves on; a pod that restarted mid-way loaded the Secrets
// of its moment and is brought in line by the next push. The record lives
// in the operator-key Secret (resources.Rotation*), so a restarted
// operator resumes the rotation where it stopped, and a value is rotated
// once: a repeated value, or the one just handled, does nothing.

// ReasonRotatingCredentials is the Progressing reason of a rotation.
const ReasonRotatingCredentials = "RotatingCredentials"

// Crash points of a rotation (failpoints.go), after each of its writes:
// the record begun, a push of a phase's credentials (the step name ends
// with the phase), the cluster-key Secret switched, the data grant
// re-signed, the record moved to Switch or Drop, status recorded.
const (
	StepRotationBegun          = "rotation-begun"
	StepRotationPushed         = "rotation-pushed-" // + phase
	StepRotationClusterKey     = "rotation-cluster-key-switched"
	StepRotationGrantResigned  = "rotation-grant-resigned"
	StepRotationSwitched       = "rotation-switched"
	StepRotationDropDue        = "rotation-drop-due"
	StepRotationStatusRecorded = "rotation-status-recorded"
)

// Rotation phases (resources.RotationPhaseAnnotation).
const (
	phaseTrust  = "Trust"
	phaseSwitch = "Switch"
	phaseDrop   = "Drop"
)

// defaultRotationGrace is the time between the switch to the new keys and
// the drop of the old ones, when MeshClusterReconciler.RotationGrace is
// zero. Tests shorten it (export_test.go).
var defaultRotationGrace atomic.Int64

func init() { defaultRotationGrace.Store(int64(time.Minute)) }

func (r *MeshClusterReconciler) rotationGrace() time.Duration {
	if r.RotationGrace > 0 {
		return r.RotationGrace
	}
	return time.Duration(defaultRotationGrace.Load())
}

// rotation is the record read from the operator-key Secret.
type rotation struct {
	secret *corev1.Secret
	value  string
	phase  string
	// switchedAt: when the Switch push completed (phase Drop).
	switchedAt time.Time
	// trustedAt: when the Trust push completed (phase Switch; zero in a
	// record an older operator wrote).
	trustedAt time.Time
	// operator: the current key, then (during a rotation) the next
	// (Trust) or previous (Switch, Drop) one.
	operator, operatorNext, operatorPrev *identity.KeyPair
	clusterOld, clusterNew               *identity.KeyPair
}

func readRotation(secret *corev1.Secret) (*rotation, error) {
	rot := &rotation{secret: secret, value: secret.Annotations[resources.RotationAnnotation], phase: secret.Annotations[resources.RotationPhaseAnnotation]}
	var err error
	if rot.operator, err = identity.KeyPairFromSecretData(secret.Data); err != nil {
		return nil, fmt.Errorf("secret %s: %w", secret.Name, err)
	}
	if rot.phase == "" {
		return rot, nil
	}
	if at := secret.Annotations[resources.RotationSwitchedAnnotation]; at != "" {
		if rot.switchedAt, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return nil, fmt.Errorf("secret %s: annotation %s: %w", secret.Name, resources.RotationSwitchedAnnotation, err)
		}
	}
	if at := secret.Annotations[resources.RotationTrustedAnnotation]; at != "" {
		if rot.trustedAt, err = time.Parse(time.RFC3339Nano, at); err != nil {
			return nil, fmt.Errorf("secret %s: annotation %s: %w", secret.Name, resources.RotationTrustedAnnotation, err)
		}
	}
	load := func(key string, required bool) (*identity.KeyPair, error) {
		raw, ok := secret.Data[key]
		if !ok {
			if required {
				return nil, fmt.Errorf("secret %s: rotation phase %s without %s", secret.Name, rot.phase, key)
			}
			return nil, nil
		}
		kp, err := identity.ParsePrivateKey(raw)
		if err != nil {
			return nil, fmt.Errorf("secret %s: %s: %w", secret.Name, key, err)
		}
		return kp, nil
	}
	switch rot.phase {
	case phaseTrust:
		rot.operatorNext, err = load(resources.RotationOperatorNextKey, true)
	case phaseSwitch, phaseDrop:
		rot.operatorPrev, err = load(resources.RotationOperatorPreviousKey, true)
	default:
		return nil, fmt.Errorf("secret %s: unknown rotation phase %q", secret.Name, rot.phase)
	}
	if err != nil {
		return nil, err
	}
	if rot.clusterOld, err = load(resources.RotationClusterOldKey, true); err != nil {
		return nil, err
	}
	if rot.clusterNew, err = load(resources.RotationClusterNewKey, true); err != nil {
		return nil, err
	}
	return rot, nil
}

// signers are the operator keys to sign a push with, in order: a node
// that refuses the first (a pod that restarted with a ConfigMap its
// kubelet had not refreshed) may still accept the other.
func (rot *rotation) signers() []*identity.KeyPair {
	return nonNil(rot.operator, rot.operatorPrev, rot.operatorNext)
}

// desired is the credential set every node must hold in rot's phase.
func (rot *rotation) desired() (adminapi.Credentials, error) {
	op := nonNil(rot.operator, rot.operatorNext, rot.operatorPrev)
	cluster := []*identity.KeyPair{rot.clusterOld, rot.clusterNew}
	signing := rot.clusterNew
	switch rot.phase {
	case phaseTrust:
		signing = rot.clusterOld
	case phaseDrop:
		op, cluster = op[:1], cluster[1:]
	}
	c := adminapi.Credentials{ClusterSigningKey: signing.PublicKey()}
	for _, k := range op {
		c.OperatorKeys = append(c.OperatorKeys, k.PublicKey())
	}
	for _, k := range cluster {
		c.ClusterKeys = append(c.ClusterKeys, k.PublicKey())
	}
	// Sealed under every cluster key a node may hold: the old one, or
	// the new one for a pod that started after the switch.
	for _, by := range []*identity.KeyPair{rot.clusterOld, rot.clusterNew} {
		box, err := by.Seal(signing)
		if err != nil {
			return c, err
		}
		c.SealedClusterKey = append(c.SealedClusterKey, adminapi.SealedKey{By: by.PublicKey(), Box: box})
	}
	return c, nil
}

func nonNil(keys ...*identity.KeyPair) []*identity.KeyPair {
	return slices.DeleteFunc(keys, func(k *identity.KeyPair) bool { return k == nil })
}

// planRotation returns the rotation step due (nil: none), or how long to
// wait for the grace period of a rotation in flight.
func (r *MeshClusterReconciler) planRotation(ctx context.Context, mc *meshv1.MeshCluster, pods map[string]podInfo, obs *status.Observation) (*operation, time.Duration, error) {
	secret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.OperatorKeySecretName(mc)}, secret); err != nil {
		return nil, 0, fmt.Errorf("get secret %s: %w", resources.OperatorKeySecretName(mc), err)
	}
	rot, err := readRotation(secret)
	if err != nil {
		return nil, 0, err
	}
	want := mc.Annotations[meshv1.RotateCredentialsAnnotation]
	handled := ""
	if c := mc.Status.Credentials; c != nil {
		handled = c.Rotation
	}
	var msg string
	switch {
	case rot.phase == "" && (want == "" || want == handled || want == rot.value):
		return nil, 0, nil
	case rot.phase == "":
		msg = fmt.Sprintf("rotating credentials (request %q): nodes trust the new keys next to the old ones", want)
	case rot.phase == phaseTrust:
		msg = fmt.Sprintf("rotating credentials (request %q): nodes trust the new keys next to the old ones", rot.value)
	case rot.phase == phaseSwitch:
		msg = fmt.Sprintf("rotating credentials (request %q): nodes switch to the new cluster key", rot.value)
		if wait := time.Until(rot.trustedAt.Add(r.rotationGrace())); wait > 0 {
			obs.Operation = &status.Operation{Reason: ReasonRotatingCredentials, Message: fmt.Sprintf(
				"rotating credentials (request %q): nodes switch to the new cluster key at %s (grace period for clients that pin the data Secret's server keys to load both)",
				rot.value, rot.trustedAt.Add(r.rotationGrace()).UTC().Format(time.RFC3339))}
			return nil, wait, nil
		}
	case rot.phase == phaseDrop:
		msg = fmt.Sprintf("rotating credentials (request %q): nodes stop trusting the old keys", rot.value)
		if wait := time.Until(rot.switchedAt.Add(r.rotationGrace())); wait > 0 {
			obs.Operation = &status.Operation{Reason: ReasonRotatingCredentials, Message: fmt.Sprintf(
				"rotating credentials (request %q): the old keys are trusted until %s (grace period for applications to load the new data grant)",
				rot.value, rot.switchedAt.Add(r.rotationGrace()).UTC().Format(time.RFC3339))}
			return nil, wait, nil
		}
	}
	var retryAt time.Time
	r.memory.with(client.ObjectKeyFromObject(mc), func(cm *clusterMemory) { retryAt = cm.retryAt })
	obs.Operation = &status.Operation{Reason: ReasonRotatingCredentials, Message: msg}
	if wait := time.Until(retryAt); wait > 0 {
		return nil, wait, nil
	}
	var targets []string
	for _, p := range pods {
		if p.IP != "" {
			targets = append(targets, net.JoinHostPort(p.IP, strconv.Itoa(nodeconfig.AdminPort)))
		}
	}
	slices.Sort(targets)
	return &operation{reason: ReasonRotatingCredentials, message: msg, run: func(ctx context.Context, _ *orchestrate.Driver, _ *topology.Topology) error {
		return r.rotate(ctx, mc, rot, want, targets)
	}}, 0, nil
}

// rotate runs the rotation from rot's phase as far as it can go in one
// step: up to the grace period after the trust or after the switch, or to
// the end.
func (r *MeshClusterReconciler) rotate(ctx context.Context, mc *meshv1.MeshCluster, rot *rotation, want string, targets []string) error {
	logger := log.FromContext(ctx).WithValues("rotation", rot.value)
	crash := func(step string) error {
		return failpoint(ctx, client.ObjectKeyFromObject(mc), step, uint64(mc.Status.Epoch))
	}
	if rot.phase == "" {
		var err error
		if rot, err = r.beginRotation(ctx, mc, rot, want); err != nil {
			return err
		}
		logger = log.FromContext(ctx).WithValues("rotation", rot.value)
		r.Recorder.Eventf(mc, rot.secret, corev1.EventTypeNormal, "CredentialsRotating", "Rotate", "rotating the operator and cluster keys (request %q) on %d nodes", want, len(targets))
		if err := crash(StepRotationBegun); err != nil {
			return err
		}
	}
	// Clients pin the keys the data Secret names: both cluster keys
	// before any node signs with the new one (the Switch push), until the
	// rotation ends.
	if err := r.publishServerKeys(ctx, mc, []ed25519.PublicKey{rot.clusterOld.PublicKey(), rot.clusterNew.PublicKey()}); err != nil {
		return err
	}
	for {
		if err := r.pushCredentials(ctx, rot, targets); err != nil {
			return fmt.Errorf("rotation %q, phase %s: %w", rot.value, rot.phase, err)
		}
		logger.Info("credentials pushed", "phase", rot.phase, "nodes", len(targets))
		if err := crash(StepRotationPushed + rot.phase); err != nil {
			return err
		}
		switch rot.phase {
		case phaseTrust:
			if err := r.switchSecrets(ctx, mc, rot, crash); err != nil {
				return err
			}
			if err := crash(StepRotationSwitched); err != nil {
				return err
			}
			if time.Until(rot.trustedAt.Add(r.rotationGrace())) > 0 {
				return nil // planRotation pushes Switch after the grace period
			}
		case phaseSwitch:
			if err := r.setRotationPhase(ctx, rot, phaseDrop, func(s *corev1.Secret) {
				s.Annotations[resources.RotationSwitchedAnnotation] = time.Now().UTC().Format(time.RFC3339Nano)
			}); err != nil {
				return err
			}
			return crash(StepRotationDropDue)
		case phaseDrop:
			return r.finishRotation(ctx, mc, rot, crash)
		}
	}
}

// beginRotation makes the new keys and records them with phase Trust.
func (r *MeshClusterReconciler) beginRotation(ctx context.Context, mc *meshv1.MeshCluster, rot *rotation, want string) (*rotation, error) {
	clusterSecret := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.ClusterKeySecretName(mc)}, clusterSecret); err != nil {
		return nil, fmt.Errorf("get secret %s: %w", resources.ClusterKeySecretName(mc), err)
	}
	clusterOld, err := identity.KeyPairFromSecretData(clusterSecret.Data)
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", clusterSecret.Name, err)
	}
	keys := map[string]*identity.KeyPair{resources.RotationClusterOldKey: clusterOld}
	for _, name := range []string{resources.RotationOperatorNextKey, resources.RotationClusterNewKey} {
		if keys[name], err = identity.Generate(nil); err != nil {
			return nil, fmt.Errorf("generate %s: %w", name, err)
		}
	}
	secret := rot.secret.DeepCopy()
	for name, kp := range keys {
		pem, err := kp.MarshalPrivateKeyPEM()
		if err != nil {
			return nil, err
		}
		secret.Data[name] = pem
	}
	if secret.Annotations == nil {
		secret.Annotations = map[string]string{}
	}
	secret.Annotations[resources.RotationAnnotation] = want
	secret.Annotations[resources.RotationPhaseAnnotation] = phaseTrust
	delete(secret.Annotations, resources.RotationSwitchedAnnotation)
	delete(secret.Annotations, resources.RotationTrustedAnnotation)
	// Update carries the resourceVersion read: a pass that read a stale
	// Secret (a rotation already begun or done) fails here.
	if err := r.Update(ctx, secret); err != nil {
		return nil, fmt.Errorf("record rotation %q in secret %s: %w", want, secret.Name, err)
	}
	return readRotation(secret)
}

// switchSecrets makes the new keys the ones pods load and the operator
// signs with: the cluster-key Secret first (a patch of its content, which
// the rotation record fully determines, so repeating it is harmless), then
// the record, to phase Switch.
func (r *MeshClusterReconciler) switchSecrets(ctx context.Context, mc *meshv1.MeshCluster, rot *rotation, crash func(string) error) error {
	data, err := rot.clusterNew.ToSecretData()
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		return err
	}
	clusterSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: mc.Namespace, Name: resources.ClusterKeySecretName(mc)}}
	if err := r.Patch(ctx, clusterSecret, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("switch secret %s to the new cluster key: %w", clusterSecret.Name, err)
	}
	if err := crash(StepRotationClusterKey); err != nil {
		return err
	}
	// Before the record moves on: from phase Switch the operator signs
	// with the new key and checks the data grant against it.
	if err := r.resignDataGrant(ctx, mc, rot.operatorNext); err != nil {
		return err
	}
	if err := crash(StepRotationGrantResigned); err != nil {
		return err
	}
	opData, err := rot.operatorNext.ToSecretData()
	if err != nil {
		return err
	}
	prev, err := rot.operator.MarshalPrivateKeyPEM()
	if err != nil {
		return err
	}
	if err := r.setRotationPhase(ctx, rot, phaseSwitch, func(s *corev1.Secret) {
		for k, v := range opData {
			s.Data[k] = v
		}
		s.Data[resources.RotationOperatorPreviousKey] = prev
		delete(s.Data, resources.RotationOperatorNextKey)
		s.Annotations[resources.RotationTrustedAnnotation] = time.Now().UTC().Format(time.RFC3339Nano)
	}); err != nil {
		return err
	}
	return nil
}

// resignDataGrant re-signs the data key's grant (the data-key Secret) with
// the new operator key, keeping the data key: applications that load the
// Secret again during the grace period keep working after the old
// operator key is dropped. A Secret that does not exist yet is made with
// the new key by reconcileCredentials; one that holds no valid data key
// is left as it is (reconcileCredentials reports it).
func (r *MeshClusterReconciler) resignDataGrant(ctx context.Context, mc *meshv1.MeshCluster, operator *identity.KeyPair) error {
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: resources.DataKeySecretName(mc)}, secret)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get secret %s: %w", resources.DataKeySecretName(mc), err)
	}
	dc, err := identity.DataCredentialsFromSecretData(secret.Data)
	if err != nil {
		return nil
	}
	now := time.Now()
	if dc.Check(identity.NewVerifier([]ed25519.PublicKey{operator.PublicKey()}), now) == nil {
		return nil // re-signed already
	}
	grant, err := operator.TryIssue(identity.Grant{Subject: dc.Key.PublicKey(), Scope: identity.DataScope, TTL: time.Duration(dataGrantTTL.Load()), Delegation: 1}, now)
	if err != nil {
		return fmt.Errorf("re-sign the data grant: %w", err)
	}
	patch, err := json.Marshal(map[string]any{"data": map[string][]byte{identity.SecretGrant: []byte(grant.EncodeHeader())}})
	if err != nil {
		return err
	}
	if err := r.Patch(ctx, secret, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("re-sign the data grant in secret %s: %w", secret.Name, err)
	}
	return nil
}

// setRotationPhase writes the record at phase with mutate applied, and
// reloads rot from what was written.
func (r *MeshClusterReconciler) setRotationPhase(ctx context.Context, rot *rotation, phase string, mutate func(*corev1.Secret)) error {
	secret := rot.secret.DeepCopy()
	mutate(secret)
	secret.Annotations[resources.RotationPhaseAnnotation] = phase
	if err := r.Update(ctx, secret); err != nil {
		return fmt.Errorf("record rotation %q phase %s in secret %s: %w", rot.value, phase, secret.Name, err)
	}
	next, err := readRotation(secret)
	if err != nil {
		return err
	}
	*rot = *next
	return nil
}

// finishRotation records the value in status (first: once the record is
// cleared, the value must already count as handled), then clears the
// record of the keys no node trusts any more.
func (r *MeshClusterReconciler) finishRotation(ctx context.Context, mc *meshv1.MeshCluster, rot *rotation, crash func(string) error) error {
	if c := mc.Status.Credentials; c == nil || c.Rotation != rot.value {
		patch := client.MergeFromWithOptions(mc.DeepCopy(), client.MergeFromWithOptimisticLock{})
		now := metav1.Now()
		mc.Status.Credentials = &meshv1.CredentialsStatus{Rotation: rot.value, RotatedAt: &now}
		if err := r.Status().Patch(ctx, mc, patch); err != nil {
			return fmt.Errorf("record rotation %q in status: %w", rot.value, err)
		}
		if err := crash(StepRotationStatusRecorded); err != nil {
			return err
		}
	}
	// No node signs with (or trusts) the old cluster key any more. Before
	// the record is cleared: until then a reconcile publishes both.
	if err := r.publishServerKeys(ctx, mc, []ed25519.PublicKey{rot.clusterNew.PublicKey()}); err != nil {
		return err
	}
	secret := rot.secret.DeepCopy()
	for _, k := range []string{resources.RotationOperatorNextKey, resources.RotationOperatorPreviousKey, resources.RotationClusterOldKey, resources.RotationClusterNewKey} {
		delete(secret.Data, k)
	}
	delete(secret.Annotations, resources.RotationPhaseAnnotation)
	delete(secret.Annotations, resources.RotationSwitchedAnnotation)
	delete(secret.Annotations, resources.RotationTrustedAnnotation)
	if err := r.Update(ctx, secret); err != nil {
		return fmt.Errorf("clear rotation %q from secret %s: %w", rot.value, secret.Name, err)
	}
	r.observeRotation(mc)
	log.FromContext(ctx).Info("credentials rotated", "rotation", rot.value)
	r.Recorder.Eventf(mc, secret, corev1.EventTypeNormal, "CredentialsRotated", "Rotate", "operator and cluster keys rotated (request %q): nodes trust only the new keys", rot.value)
	return nil
}

// pushCredentials gives every target rot's credential set, up to
// pushParallelism at once; all must accept it.
func (r *MeshClusterReconciler) pushCredentials(ctx context.Context, rot *rotation, targets []string) error {
	want, err := rot.desired()
	if err != nil {
		return err
	}
	errs := make([]error, len(targets))
	sem := make(chan struct{}, pushParallelism)
	var wg sync.WaitGroup
	for i, addr := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var err error
			for _, key := range rot.signers() {
				cctx, cancel := context.WithTimeout(ctx, reachabilityTimeout)
				_, err = adminclient.NewCredentialsClient(key, nil, addr).PutCredentials(cctx, want)
				cancel()
				var se *adminclient.StatusError
				if !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
					break // accepted, or refused for a reason another key does not change
				}
			}
			if err != nil {
				errs[i] = fmt.Errorf("node %s: %w", addr, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pushParallelism bounds the credential pushes under way at once.
const pushParallelism = 16
