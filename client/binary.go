package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/purplerain/mesh-operator/node/dataapi"
	"github.com/purplerain/mesh-operator/node/topology"
	"github.com/purplerain/mesh-operator/node/wireapi"
)

// Close closes the client's binary connections (nothing to do with
// TransportHTTP). Requests in flight on them fail.
func (c *Client) Close() error {
	c.wmu.Lock()
	conns := c.wconns
	c.wconns = map[string]*wireapi.Conn{}
	c.wauth = map[*wireapi.Conn][]byte{}
	c.wmu.Unlock()
	for _, wc := range conns {
		_ = wc.Close()
	}
	return nil
}

// wireAddr is the wire port of the member whose data API is at dataAddr.
func (c *Client) wireAddr(dataAddr string) (string, error) {
	t := c.Topology()
	for _, m := range t.Members {
		if m.Data == dataAddr {
			if m.Wire == "" {
				return "", fmt.Errorf("client: member %s has no wire address for the binary transport", m.Name)
			}
			return m.Wire, nil
		}
	}
	// Not a member any more: a refresh will route elsewhere.
	return "", fmt.Errorf("%w: %s is not in the topology", wireapi.ErrConnection, dataAddr)
}

// wireConn returns the live connection to addr, dialing one if needed.
func (c *Client) wireConn(ctx context.Context, addr string) (*wireapi.Conn, error) {
	c.wmu.Lock()
	wc := c.wconns[addr]
	c.wmu.Unlock()
	raw, _, err := c.tokens.get()
	if err != nil {
		return nil, err
	}
	if wc != nil && wc.Err() == nil {
		// Present a renewed token before the old one expires.
		if err := c.authConn(wc, raw, func(tok []byte) error { return wc.Authenticate(ctx, tok) }); err != nil {
			return nil, asClientError(err)
		}
		return wc, nil
	}
	var nc *wireapi.Conn
	if c.opts.Plaintext {
		nc, err = wireapi.Dial(ctx, addr)
	} else {
		nc, err = wireapi.DialSealed(ctx, addr, c.opts.ServerKeys)
	}
	if err != nil {
		return nil, err
	}
	if err := c.authConn(nc, raw, func(tok []byte) error { return nc.Authenticate(ctx, tok) }); err != nil {
		_ = nc.Close()
		return nil, asClientError(err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if cur := c.wconns[addr]; cur != nil && cur != wc && cur.Err() == nil {
		// Another caller dialed first; keep one connection.
		delete(c.wauth, nc)
		go func() { _ = nc.Close() }()
		return cur, nil
	}
	if wc != nil {
		_ = wc.Close()
		delete(c.wauth, wc)
	}
	c.wconns[addr] = nc
	return nc, nil
}

// wireTopology asks the node at wire address addr for its topology.
func (c *Client) wireTopology(ctx context.Context, addr string, out *topology.Topology) error {
	wc, err := c.wireConn(ctx, addr)
	if err != nil {
		return err
	}
	t, err := wc.Topology(ctx)
	if err != nil {
		return asClientError(err)
	}
	*out = *t
	return nil
}

// asClientError turns a binary refusal into the SDK's *Error, so retries
// and errors.As behave as with HTTP.
func asClientError(err error) error {
	var re *wireapi.RefusedError
	if errors.As(err, &re) {
		return &Error{Status: re.Status(), ErrorResponse: re.ErrorResponse}
	}
	return err
}

func (c *Client) ingestBinary(ctx context.Context, dataAddr string, batch []Event) ([]dataapi.Ack, error) {
	addr, err := c.wireAddr(dataAddr)
	if err != nil {
		return nil, err
	}
	wc, err := c.wireConn(ctx, addr)
	if err != nil {
		return nil, err
	}
	if c.opts.OnBinarySend != nil {
		c.opts.OnBinarySend(batch)
	}
	acks, err := wc.Ingest(ctx, batch)
	return acks, asClientError(err)
}

func (c *Client) pollBinary(ctx context.Context, dataAddr, cursor string, limit int) (dataapi.PollResponse, error) {
	addr, err := c.wireAddr(dataAddr)
	if err != nil {
		return dataapi.PollResponse{}, err
	}
	wc, err := c.wireConn(ctx, addr)
	if err != nil {
		return dataapi.PollResponse{}, err
	}
	resp, err := wc.Poll(ctx, dataapi.PollRequest{Cursor: cursor, Limit: limit})
	return resp, asClientError(err)
}
