package wireapi

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"github.com/purplerain/mesh-operator/engine/identity"
	"github.com/purplerain/mesh-operator/engine/wire"
)

// serverSession is the wire session configuration of a server signing with
// the key keyFn returns now (nil: unsigned).
func serverSession(keyFn func() *identity.KeyPair) wire.ServerSession {
	if keyFn == nil {
		return wire.ServerSession{}
	}
	key := keyFn()
	if key == nil {
		return wire.ServerSession{}
	}
	return wire.ServerSession{Sign: key.Sign, Public: key.PublicKey()}
}

// DialSealed connects to a node's wire port and runs a session handshake
// first, so every packet of the connection is sealed. With trusted keys, a
// node whose handshake is not signed by one of them is refused
// (wire.ErrHandshake); without, the session resists passive observers
// only.
func DialSealed(ctx context.Context, addr string, trusted []ed25519.PublicKey) (*Conn, error) {
	c, err := dialTCP(ctx, addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	sc, err := wire.ClientSession{Subprotocol: Subprotocol, TrustedServerKeys: trusted}.Handshake(c)
	stop()
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w: %w", ErrConnection, err)
	}
	return NewConn(sc), nil
}
