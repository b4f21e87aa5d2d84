package wireapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"

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
// (wire.ErrHandshake, not wrapped in ErrConnection: retrying cannot help);
// without, the session resists passive observers only. A handshake the
// connection broke off is an ErrConnection.
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
		if errors.Is(err, wire.ErrHandshake) && !brokeOnIO(err) {
			// The node answered and its answer was refused (a key not
			// trusted, a bad signature, not a welcome): dialling again
			// gets the same answer, so this is no connection failure a
			// caller should retry.
			return nil, fmt.Errorf("wireapi: session with %s refused: %w", addr, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrConnection, err)
	}
	return NewConn(sc), nil
}

// brokeOnIO says a handshake error is the connection failing (closed,
// reset, timed out, cut off by the context) rather than a refusal of what
// the node sent.
func brokeOnIO(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}
