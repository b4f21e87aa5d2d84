package replication

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/redex"
)

// TestStreamEndsWhenItsTokenKeyIsDropped: a credential rotation that
// drops the cluster key a stream's token was signed with ends the stream
// at its next heartbeat (the follower's reconnection with that key is
// denied), while a stream opened with a key still trusted goes on,
// although its token expired since it was accepted.
func TestStreamEndsWhenItsTokenKeyIsDropped(t *testing.T) {
	k := newKeys(t)
	newKey, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	k.verifier.SetTrusted([]ed25519.PublicKey{k.operator.PublicKey(), newKey.PublicKey()})
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 10)
	ow := startOwner(t, k, src, "", nil)

	signed := func(key *identity.KeyPair, ttl time.Duration) func() ([]byte, error) {
		return func() ([]byte, error) {
			tok, err := key.TryIssue(identity.Grant{Subject: k.follower.PublicKey(), Scope: identity.ScopeReplicate, TTL: ttl}, time.Now())
			if err != nil {
				return nil, err
			}
			return tok.Encode(), nil
		}
	}
	oldLog, newLog := openLog(t, redex.Options{}), openLog(t, redex.Options{})
	oldF := startFollower(t, FollowerOptions{Name: "old", Shard: 0, Addr: ow.addr, Log: oldLog, Epoch: constEpoch(1), Token: signed(k.operator, time.Hour)})
	// Short-lived: it has expired by the time the keys change.
	newF := startFollower(t, FollowerOptions{Name: "new", Shard: 0, Addr: ow.addr, Log: newLog, Epoch: constEpoch(1), Token: signed(newKey, 200*time.Millisecond)})
	waitCaughtUp(t, oldF, oldLog, ol)
	waitCaughtUp(t, newF, newLog, ol)
	time.Sleep(200*time.Millisecond + identity.DefaultClockSkew)

	k.verifier.SetTrusted([]ed25519.PublicKey{newKey.PublicKey()})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var denied *DeniedError
		if errors.As(oldF.Status().LastErr, &denied) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream opened with the dropped key still runs: %+v", oldF.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
	subs := newF.Status().Subscriptions
	appendN(t, ol, 0, 10, 10)
	waitCaughtUp(t, newF, newLog, ol)
	if st := newF.Status(); st.Subscriptions != subs || !st.Connected {
		t.Fatalf("the stream opened with a trusted key was ended: %+v", st)
	}
	if oldLog.NextSeq() != 10 {
		t.Fatalf("the denied follower got %d entries, want the 10 before the drop", oldLog.NextSeq())
	}
}
