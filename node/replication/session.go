package replication

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/wire"
)

// Sealed replication. A follower starts its connection with a wire session
// handshake (engine/wire session.go) unless FollowerOptions.Plaintext; from
// then on every packet both ways is sealed with the session's keys, and a
// flipped byte, a replayed packet or a packet of another session ends the
// connection (the follower reconnects; nothing unauthenticated is
// appended). The subscribe token travels sealed. The owner signs the
// handshake with ServerOptions.SessionKey (the cluster key);
// ServerOptions.RequireSealed refuses followers that do not seal (the node
// runtime sets both).
//
// With FollowerOptions.RequireSignedOwner the follower accepts only an
// owner whose handshake is signed by the key that issued its own
// replication token, so a man in the middle cannot pose as the owner;
// without it the session protects against passive observers only.
// FollowerOptions.TrustedOwnerKeys trusts a set that can change, on its
// own or besides that issuer: the node sets both (node/followers.go),
// passing its replication verifier's trusted cluster keys, asked at every
// connection (a credential rotation trusts the old and the new key while
// nodes switch their signing keys one at a time). A follower that refuses
// the handshake sends nothing: its token travels only inside a session
// whose owner it authenticated.

// session accepts a handshake on *conn if it starts with one, replacing
// *conn with the sealed connection.
func (s *Server) session(conn *net.Conn) error {
	ss := wire.ServerSession{Timeout: s.o.HandshakeTimeout}
	if s.o.SessionKey != nil {
		if k := s.o.SessionKey(); k != nil {
			ss.Sign, ss.Public = k.Sign, k.PublicKey()
		}
	}
	c, err := ss.AcceptOrPlain(*conn, s.o.RequireSealed)
	if err != nil {
		_ = (*conn).Close()
		s.o.Logger.Warn("replication connection refused at the session handshake", "remote", (*conn).RemoteAddr().String(), "err", err)
		return fmt.Errorf("replication: session: %w", err)
	}
	*conn = c
	return nil
}

// seal runs the client handshake on conn (ended early if ctx ends), trusting
// the issuer of tok's root link as the owner's key with RequireSignedOwner.
// On error it closes conn.
func (f *Follower) seal(ctx context.Context, conn net.Conn, tok []byte) (net.Conn, error) {
	if f.o.Plaintext {
		return conn, nil
	}
	var trusted []ed25519.PublicKey
	if f.o.RequireSignedOwner {
		t, err := identity.ParseToken(tok)
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("replication: own token: %w", err)
		}
		trusted = []ed25519.PublicKey{t.Chain[0].Issuer}
	}
	if f.o.TrustedOwnerKeys != nil {
		keys := f.o.TrustedOwnerKeys()
		if len(trusted)+len(keys) == 0 {
			// An empty list would make the handshake trust anyone.
			_ = conn.Close()
			return nil, errors.New("replication: no trusted owner keys: refusing to follow an owner that cannot be authenticated")
		}
		trusted = append(trusted, keys...)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	sc, err := wire.ClientSession{Subprotocol: Subprotocol, TrustedServerKeys: trusted}.Handshake(conn)
	stop()
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("replication: session with the owner: %w", err)
	}
	return sc, nil
}
