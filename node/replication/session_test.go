package replication

import (
	"crypto/ed25519"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/redex"
	"github.com/purplerain/mesh-operator/engine/wire"
)

func TestSealedReplicationWithASignedOwner(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 20)
	if _, err := ol.Append(make([]byte, 3*MaxUnfragmentedEntry)); err != nil { // fragmented, sealed
		t.Fatal(err)
	}
	ow := startOwner(t, k, src, "", func(o *ServerOptions) {
		o.SessionKey, o.RequireSealed = func() *identity.KeyPair { return k.operator }, true
	})
	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil), RequireSignedOwner: true})
	waitCaughtUp(t, f, fl, ol)
	appendN(t, ol, 0, 21, 10) // live
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)

	// Neither a plaintext follower nor one that does not trust the
	// owner's key gets anything.
	plain := openLog(t, redex.Options{})
	startFollower(t, FollowerOptions{Name: "plain", Shard: 0, Addr: ow.addr, Log: plain, Epoch: constEpoch(1), Token: k.token(t, nil), Plaintext: true})
	stranger, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	other := startOwner(t, k, src, "", func(o *ServerOptions) { o.SessionKey = func() *identity.KeyPair { return stranger } })
	wary := openLog(t, redex.Options{})
	startFollower(t, FollowerOptions{Name: "wary", Shard: 0, Addr: other.addr, Log: wary, Epoch: constEpoch(1), Token: k.token(t, nil), RequireSignedOwner: true})
	time.Sleep(300 * time.Millisecond)
	if plain.NextSeq() != 0 || wary.NextSeq() != 0 {
		t.Fatalf("plaintext follower holds %d entries, follower of an untrusted owner %d; want none", plain.NextSeq(), wary.NextSeq())
	}
}

// tamperRelay forwards follower connections to addr; on the first
// connection it hands the owner→follower packet number at (after the
// handshake's welcome, 0) to mutate once.
func tamperRelay(t *testing.T, addr string, at int, mutate func(pkt []byte) [][]byte) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var done atomic.Int32
	go func() {
		for first := true; ; first = false {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", addr)
			if err != nil {
				in.Close()
				return
			}
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func(first bool) {
				defer in.Close()
				for i := 0; ; i++ {
					var hb [wire.HeaderSize]byte
					if _, err := io.ReadFull(out, hb[:]); err != nil {
						return
					}
					h, _ := wire.DecodeHeader(hb[:])
					pkt := append(hb[:], make([]byte, h.PayloadLen)...)
					if _, err := io.ReadFull(out, pkt[wire.HeaderSize:]); err != nil {
						return
					}
					pkts := [][]byte{pkt}
					if first && i == at {
						pkts = mutate(pkt)
						done.Add(1)
					}
					for _, p := range pkts {
						if _, err := in.Write(p); err != nil {
							return
						}
					}
				}
			}(first)
		}
	}()
	return ln.Addr().String(), &done
}

func TestTamperedOrReplayedReplicationIsRefused(t *testing.T) {
	for name, mutate := range map[string]func([]byte) [][]byte{
		"flipped byte": func(p []byte) [][]byte { p[len(p)-30] ^= 0x08; return [][]byte{p} },
		"replayed":     func(p []byte) [][]byte { return [][]byte{p, append([]byte{}, p...)} },
	} {
		t.Run(name, func(t *testing.T) {
			k := newKeys(t)
			src := newSource(1)
			ol := openLog(t, redex.Options{})
			src.add(0, ol)
			appendN(t, ol, 0, 0, 200)
			ow := startOwner(t, k, src, "", func(o *ServerOptions) {
				o.SessionKey, o.RequireSealed = func() *identity.KeyPair { return k.operator }, true
			})
			addr, hits := tamperRelay(t, ow.addr, 2, mutate)
			fl := openLog(t, redex.Options{})
			f := startFollower(t, FollowerOptions{Shard: 0, Addr: addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil), RequireSignedOwner: true})
			// The follower drops the broken connection, reconnects and
			// ends with exactly the owner's entries: nothing forged or
			// repeated was appended.
			waitCaughtUp(t, f, fl, ol)
			assertReplica(t, fl, ol, 0)
			if hits.Load() != 1 {
				t.Fatalf("the relay tampered %d times, want once", hits.Load())
			}
		})
	}
}

// TestTrustedOwnerKeysAreAskedAtEveryConnection: a follower with
// TrustedOwnerKeys follows only an owner whose handshake one of the keys
// the function returns signs. An owner signing with another key, an
// unsigned one, and any owner while the list is empty get nothing
// appended (the handshake fails before the subscription); once the key is
// trusted (a rotation), the next connection replicates.
func TestTrustedOwnerKeysAreAskedAtEveryConnection(t *testing.T) {
	k := newKeys(t)
	src := newSource(1)
	ol := openLog(t, redex.Options{})
	src.add(0, ol)
	appendN(t, ol, 0, 0, 20)
	rotated, err := identity.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	signedBy := func(key *identity.KeyPair) func(o *ServerOptions) {
		return func(o *ServerOptions) { o.SessionKey = func() *identity.KeyPair { return key } }
	}
	var trusted atomic.Pointer[[]ed25519.PublicKey]
	trusted.Store(&[]ed25519.PublicKey{k.operator.PublicKey()})
	keys := func() []ed25519.PublicKey { return *trusted.Load() }
	refused := func(name string, adjust func(o *ServerOptions), keys func() []ed25519.PublicKey, want string) {
		t.Helper()
		ow := startOwner(t, k, src, "", adjust)
		fl := openLog(t, redex.Options{})
		f := startFollower(t, FollowerOptions{Name: name, Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil), TrustedOwnerKeys: keys})
		waitFor(t, name+" refused", func() bool { return f.Status().LastErr != nil })
		if st := f.Status(); st.Subscriptions != 0 || fl.NextSeq() != 0 || !strings.Contains(st.LastErr.Error(), want) {
			t.Fatalf("%s: subscriptions %d, %d entries, last error %v; want refused at the handshake (%q) with nothing appended", name, st.Subscriptions, fl.NextSeq(), st.LastErr, want)
		}
		_ = f.Close()
	}
	refused("stranger", signedBy(rotated), keys, "session")
	refused("unsigned", nil, keys, "session")
	refused("empty", signedBy(k.operator), func() []ed25519.PublicKey { return nil }, "no trusted owner keys")

	ow := startOwner(t, k, src, "", signedBy(rotated))
	fl := openLog(t, redex.Options{})
	f := startFollower(t, FollowerOptions{Name: "rotating", Shard: 0, Addr: ow.addr, Log: fl, Epoch: constEpoch(1), Token: k.token(t, nil), TrustedOwnerKeys: keys})
	waitFor(t, "the first refusal", func() bool { return f.Status().LastErr != nil })
	if fl.NextSeq() != 0 {
		t.Fatalf("an owner signing with an untrusted key fed %d entries", fl.NextSeq())
	}
	trusted.Store(&[]ed25519.PublicKey{k.operator.PublicKey(), rotated.PublicKey()})
	waitCaughtUp(t, f, fl, ol)
	assertReplica(t, fl, ol, 0)
}
